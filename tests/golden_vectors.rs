//! Golden vectors captured from a real ZooKeeper 3.8.0 (`tests/testdata/zk-wire/`).
//!
//! Every request is split into frames and decoded (checked against what the capture says was
//! sent, and re-encoded byte for byte where the encoding is canonical). Every response frame
//! is decoded by a small test-only decoder into plain values, re-encoded through the
//! production encoders, and compared byte for byte with the capture, with the documented
//! variable spans (session ids, passwords, zxids, times) masked.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use ringkeeper::proto::frame::{self, four_letter_word, FrameError, DEFAULT_MAX_PACKET};
use ringkeeper::proto::jute::Reader;
use ringkeeper::proto::records::{
    decode_request, encode_multi_read_marshalling_error, encode_reply, encode_watch_event,
    ConnectRequest, ConnectResponse, ReadOp, ReadResult, ReplyBody, Request, RequestError,
    RequestHeader, PASSWD_LEN,
};
use ringkeeper::proto::types::{opcode, xid, Acl, ErrorCode, EventType, Id, Stat};
use ringkeeper::txn::{MultiResult, WriteOp};

struct Vector {
    phase: String,
    name: String,
    conn: String,
    request: Vec<u8>,
    response: Vec<u8>,
    server_closed: bool,
    request_spans: Vec<(usize, usize)>,
    response_spans: Vec<(usize, usize)>,
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spans(v: &serde_json::Value) -> Vec<(usize, usize)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let n = |k: &str| s[k].as_u64().expect("span field") as usize;
                    (n("offset"), n("length"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn load() -> Vec<Vector> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/zk-wire/vectors.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden vectors at {}: {e}", path.display()));
    let vectors = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Vector {
                phase: s("phase"),
                name: s("name"),
                conn: s("conn"),
                request: unhex(&s("request_hex")),
                response: unhex(&s("response_hex")),
                server_closed: v["server_closed"].as_bool().expect("server_closed"),
                request_spans: spans(&v["request_variable"]),
                response_spans: spans(&v["response_variable"]),
            }
        })
        .collect();
    vectors
}

fn masked(bytes: &[u8], spans: &[(usize, usize)]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(off, len) in spans {
        for x in b.iter_mut().skip(off).take(len) {
            *x = 0;
        }
    }
    b
}

fn assert_same(name: &str, what: &str, expected: &[u8], actual: &[u8], spans: &[(usize, usize)]) {
    assert_eq!(
        hex(&masked(actual, spans)),
        hex(&masked(expected, spans)),
        "{name}: {what} differs from the capture (masked)"
    );
}

/// Splits a byte string into whole frames (payloads), asserting nothing is left over.
fn split_all(name: &str, bytes: &[u8], max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut it = frame::frames(bytes, max);
    let mut out = Vec::new();
    for f in it.by_ref() {
        out.push(f?.to_vec());
    }
    assert_eq!(it.consumed(), bytes.len(), "{name}: trailing partial frame");
    Ok(out)
}

// ---- test-only reply decoder: wire bytes → plain values ----

/// A reply body as plain owned values, turned back into a `ReplyBody` for encoding.
#[derive(Debug)]
enum Body {
    Empty,
    Path(String),
    PathStat(String, Stat),
    Stat(Stat),
    Data(Option<Vec<u8>>, Stat),
    Acl(Vec<Acl>, Stat),
    Children(Vec<String>),
    Children2(Vec<String>, Stat),
    Multi(Vec<MultiResult>),
    MultiRead(Vec<ReadValue>),
    Count(i32),
    Paths(Vec<String>),
    ErrorResponse(i32),
    WhoAmI(Vec<(String, String)>),
}

#[derive(Debug)]
enum ReadValue {
    Data(Option<Vec<u8>>, Stat),
    Children(Vec<String>),
    Error(ErrorCode),
}

fn code(c: i32) -> ErrorCode {
    ErrorCode::from_code(c).unwrap_or_else(|| panic!("unknown error code {c}"))
}

fn read_multi_header(r: &mut Reader<'_>) -> (i32, bool, i32) {
    (
        r.read_i32().unwrap(),
        r.read_bool().unwrap(),
        r.read_i32().unwrap(),
    )
}

/// Decodes a successful reply body for `req`; every byte must be used.
fn decode_body(name: &str, req: &Request, body: &[u8]) -> Body {
    let mut r = Reader::new(body);
    let b = match req {
        Request::Create {
            opcode: opcode::CREATE,
            ..
        }
        | Request::Sync { .. } => Body::Path(r.read_string().unwrap()),
        Request::Create { .. } => Body::PathStat(r.read_string().unwrap(), r.read_stat().unwrap()),
        Request::Exists { .. } | Request::SetData(_) | Request::SetAcl(_) => {
            Body::Stat(r.read_stat().unwrap())
        }
        Request::GetData { .. } | Request::Reconfig { .. } => Body::Data(
            r.read_buffer().unwrap().map(<[u8]>::to_vec),
            r.read_stat().unwrap(),
        ),
        Request::GetAcl { .. } => Body::Acl(r.read_acl_vec().unwrap(), r.read_stat().unwrap()),
        Request::GetChildren { .. } => Body::Children(r.read_string_vec().unwrap()),
        Request::GetChildren2 { .. } => {
            Body::Children2(r.read_string_vec().unwrap(), r.read_stat().unwrap())
        }
        Request::GetEphemerals { .. } => Body::Paths(r.read_string_vec().unwrap()),
        Request::GetAllChildrenNumber { .. } => Body::Count(r.read_i32().unwrap()),
        Request::AddWatch { .. } => Body::ErrorResponse(r.read_i32().unwrap()),
        Request::WhoAmI => Body::WhoAmI(
            r.read_vec(1000, |r| Ok((r.read_string()?, r.read_string()?)))
                .unwrap(),
        ),
        Request::Multi(ops) => {
            let mut results = Vec::new();
            let mut failed = false;
            loop {
                let (t, done, err) = read_multi_header(&mut r);
                if done {
                    assert_eq!((t, err), (-1, -1), "{name}: terminator");
                    break;
                }
                let op = ops
                    .get(results.len())
                    .unwrap_or_else(|| panic!("{name}: extra result"));
                let res = match t {
                    -1 => {
                        failed = true;
                        let again = r.read_i32().unwrap();
                        assert_eq!(err, again, "{name}: error result code twice");
                        MultiResult::Error(code(err))
                    }
                    // The result type must agree with how the op was decoded (normalised).
                    1 => match op {
                        WriteOp::Create {
                            opcode: opcode::CREATE,
                            ..
                        } => MultiResult::Created {
                            opcode: opcode::CREATE,
                            path: r.read_string().unwrap(),
                            stat: Stat::default(),
                        },
                        other => panic!("{name}: type-1 result for {other:?}"),
                    },
                    15 => match op {
                        WriteOp::Create {
                            opcode: o @ (opcode::CREATE_CONTAINER | opcode::CREATE_TTL),
                            ..
                        } => MultiResult::Created {
                            opcode: *o,
                            path: r.read_string().unwrap(),
                            stat: r.read_stat().unwrap(),
                        },
                        other => panic!("{name}: type-15 result for {other:?}"),
                    },
                    2 => {
                        assert!(matches!(op, WriteOp::Delete(_)), "{name}");
                        MultiResult::Deleted
                    }
                    5 => {
                        assert!(matches!(op, WriteOp::SetData(_)), "{name}");
                        MultiResult::SetData(r.read_stat().unwrap())
                    }
                    13 => {
                        assert!(matches!(op, WriteOp::Check(_)), "{name}");
                        MultiResult::Checked
                    }
                    other => panic!("{name}: multi result type {other}"),
                };
                if t != -1 {
                    assert_eq!(err, 0, "{name}: success result err");
                }
                results.push(res);
            }
            assert_eq!(results.len(), ops.len(), "{name}: one result per op");
            if failed {
                assert!(
                    results.iter().all(|r| matches!(r, MultiResult::Error(_))),
                    "{name}"
                );
            }
            Body::Multi(results)
        }
        Request::MultiRead(ops) => {
            let mut results = Vec::new();
            loop {
                let (t, done, err) = read_multi_header(&mut r);
                if done {
                    break;
                }
                let op = ops
                    .get(results.len())
                    .unwrap_or_else(|| panic!("{name}: extra result"));
                results.push(match (t, op) {
                    (-1, _) => {
                        assert_eq!(r.read_i32().unwrap(), err, "{name}");
                        ReadValue::Error(code(err))
                    }
                    (4, ReadOp::GetData { .. }) => ReadValue::Data(
                        r.read_buffer().unwrap().map(<[u8]>::to_vec),
                        r.read_stat().unwrap(),
                    ),
                    (8, ReadOp::GetChildren { .. }) => {
                        ReadValue::Children(r.read_string_vec().unwrap())
                    }
                    other => panic!("{name}: result {other:?}"),
                });
            }
            Body::MultiRead(results)
        }
        _ => Body::Empty,
    };
    assert!(
        r.is_empty(),
        "{name}: {} reply bytes left undecoded ({b:?})",
        r.remaining()
    );
    b
}

/// Encodes `body` through the production encoder, straight from borrowed values.
fn encode_body(out: &mut Vec<u8>, xid: i32, zxid: i64, err: ErrorCode, body: &Body) {
    let reads: Vec<ReadResult<'_>>;
    let b = match body {
        Body::Empty => ReplyBody::Empty,
        Body::Path(p) => ReplyBody::Path(p),
        Body::PathStat(path, stat) => ReplyBody::PathStat { path, stat: *stat },
        Body::Stat(s) => ReplyBody::Stat(*s),
        Body::Data(data, stat) => ReplyBody::Data {
            data: data.as_deref(),
            stat: *stat,
        },
        Body::Acl(acl, stat) => ReplyBody::Acl { acl, stat: *stat },
        Body::Children(c) => ReplyBody::Children(c),
        Body::Children2(c, stat) => ReplyBody::Children2 {
            children: c,
            stat: *stat,
        },
        Body::Multi(results) => ReplyBody::Multi(results),
        Body::MultiRead(results) => {
            reads = results
                .iter()
                .map(|r| match r {
                    ReadValue::Data(d, stat) => ReadResult::Data {
                        data: d.as_deref(),
                        stat: *stat,
                    },
                    ReadValue::Children(c) => ReadResult::Children(c),
                    ReadValue::Error(e) => ReadResult::Error(*e),
                })
                .collect();
            ReplyBody::MultiRead(&reads)
        }
        Body::Count(n) => ReplyBody::Count(*n),
        Body::Paths(p) => ReplyBody::Paths(p),
        Body::ErrorResponse(n) => ReplyBody::ErrorResponse(*n),
        Body::WhoAmI(list) => ReplyBody::WhoAmI(list),
    };
    encode_reply(out, xid, zxid, err, &b);
}

/// For the lists whose order is a Java hash-set artifact: the same elements in another
/// order must give a frame of the same length holding the same set of names.
fn check_reordered_list(name: &str, body: &Body, xid: i32, zxid: i64, frame_len: usize) {
    let list = match body {
        Body::Children(c) | Body::Children2(c, _) | Body::Paths(c) => c.clone(),
        _ => return,
    };
    let mut reversed = list.clone();
    reversed.reverse();
    let reordered = match body {
        Body::Children(_) => Body::Children(reversed),
        Body::Children2(_, s) => Body::Children2(reversed, *s),
        _ => Body::Paths(reversed),
    };
    let mut out = Vec::new();
    encode_body(&mut out, xid, zxid, ErrorCode::Ok, &reordered);
    assert_eq!(out.len(), frame_len, "{name}: reordered list length");
    let mut r = Reader::new(&out[20..]);
    let got: BTreeSet<String> = r.read_string_vec().unwrap().into_iter().collect();
    assert_eq!(
        got,
        list.into_iter().collect::<BTreeSet<_>>(),
        "{name}: reordered set"
    );
}

// ---- what each request must decode to ----

fn open_acl() -> Vec<Acl> {
    Acl::open_unsafe()
}

/// Specific expectations for the vectors that matter most; every other request is only
/// required to decode (or fail) consistently with its opcode.
fn check_request(name: &str, h: &RequestHeader, res: &Result<Request, RequestError>) -> bool {
    let ok = |res: &Result<Request, RequestError>| -> Request {
        res.clone()
            .unwrap_or_else(|e| panic!("{name}: decode failed: {e:?}"))
    };
    match name {
        "ping" | "ping_after_resume" => {
            assert_eq!((h.xid, ok(res)), (xid::PING, Request::Ping));
        }
        "create_persistent" => match ok(res) {
            Request::Create { opcode: 1, req } => {
                assert_eq!(req.path, "/rk");
                assert_eq!(req.data.as_deref(), Some(&b"hello"[..]));
                assert_eq!((req.acl, req.flags, req.ttl), (open_acl(), 0, -1));
            }
            other => panic!("{name}: {other:?}"),
        },
        "create2_null_data" => match ok(res) {
            Request::Create { opcode: 15, req } => assert_eq!(req.data, None),
            other => panic!("{name}: {other:?}"),
        },
        "create_container" => {
            assert!(matches!(ok(res), Request::Create { opcode: 19, req } if req.flags == 4));
        }
        "create_ttl" => match ok(res) {
            Request::Create { opcode: 21, req } => {
                assert_eq!((req.path.as_str(), req.flags, req.ttl), ("/ttl", 5, 60000))
            }
            other => panic!("{name}: {other:?}"),
        },
        "create_empty_acl" => {
            assert!(matches!(ok(res), Request::Create { req, .. } if req.acl.is_empty()));
        }
        "get_data" => assert_eq!(
            ok(res),
            Request::GetData {
                path: "/rk".into(),
                watch: false
            }
        ),
        "create_ephemeral" | "create_persistent_sequential" | "create_op1_with_ttl_flag" => {
            let want_flags = match name {
                "create_ephemeral" => 1,
                "create_persistent_sequential" => 2,
                _ => 5,
            };
            assert!(
                matches!(ok(res), Request::Create { opcode: 1, req } if req.flags == want_flags && req.ttl == -1),
                "{name}"
            );
        }
        "create2_sequential_trailing_slash" => assert!(
            matches!(ok(res), Request::Create { opcode: 15, req } if req.path == "/rk/" && req.flags == 2)
        ),
        "create_ttl_sequential" | "create_ttl_zero" | "create_ttl_non_ttl_mode" => {
            let want = match name {
                "create_ttl_sequential" => (6, 1000),
                "create_ttl_zero" => (5, 0),
                _ => (0, 5000),
            };
            assert!(
                matches!(ok(res), Request::Create { opcode: 21, req } if (req.flags, req.ttl) == want),
                "{name}"
            );
        }
        "create_with_auth_acl" => match ok(res) {
            Request::Create { req, .. } => {
                assert_eq!(
                    req.acl,
                    vec![Acl {
                        perms: 31,
                        id: Id::new("auth", "")
                    }]
                )
            }
            other => panic!("{name}: {other:?}"),
        },
        "set_acl_good_version" => match ok(res) {
            Request::SetAcl(s) => {
                assert_eq!(s.path, "/rk");
                assert_eq!(s.version, 0);
                assert_eq!(s.acl.len(), 2, "duplicates are kept on the wire");
            }
            other => panic!("{name}: {other:?}"),
        },
        "multi_failure_partial" => match ok(res) {
            Request::Multi(ops) => {
                assert_eq!(ops.len(), 4);
                assert!(matches!(&ops[1], WriteOp::Check(c) if c.path == "/rk" && c.version == 99));
                assert!(matches!(&ops[2], WriteOp::SetData(s) if s.version == -1));
            }
            other => panic!("{name}: {other:?}"),
        },
        "get_children2" => assert_eq!(
            ok(res),
            Request::GetChildren2 {
                path: "/rk".into(),
                watch: false
            }
        ),
        "get_all_children_number" => assert_eq!(
            ok(res),
            Request::GetAllChildrenNumber { path: "/rk".into() }
        ),
        "get_ephemerals_prefix" => assert_eq!(
            ok(res),
            Request::GetEphemerals {
                prefix: "/rk/es".into()
            }
        ),
        "sync" => assert_eq!(ok(res), Request::Sync { path: "/rk".into() }),
        "get_acl" => assert_eq!(ok(res), Request::GetAcl { path: "/rk".into() }),
        "delete_root" => assert!(matches!(ok(res), Request::Delete(d) if d.path == "/")),
        "check_watches_none" => assert_eq!(
            ok(res),
            Request::CheckWatches {
                path: "/nope".into(),
                kind: 3
            }
        ),
        "remove_watches_any" => assert_eq!(
            ok(res),
            Request::RemoveWatches {
                path: "/rk".into(),
                kind: 3
            }
        ),
        "set_watches_zxid_zero" => match ok(res) {
            Request::SetWatches(sw) => {
                assert_eq!(sw.relative_zxid, 0);
                assert_eq!(
                    (sw.data, sw.exist, sw.child),
                    (
                        vec!["/rk".into()],
                        vec!["/rk/w1".into()],
                        vec!["/rk".to_string()]
                    )
                );
            }
            other => panic!("{name}: {other:?}"),
        },
        "get_data_with_watch" => {
            assert_eq!(
                ok(res),
                Request::GetData {
                    path: "/rk".into(),
                    watch: true
                }
            )
        }
        "exists_missing_with_watch" => {
            assert!(matches!(ok(res), Request::Exists { watch: true, .. }))
        }
        "set_data_good_version" => match ok(res) {
            Request::SetData(s) => assert_eq!((s.path.as_str(), s.version), ("/rk", 0)),
            other => panic!("{name}: {other:?}"),
        },
        "delete_ok" => assert!(matches!(ok(res), Request::Delete(d) if d.version == 0)),
        "multi_success" => match ok(res) {
            Request::Multi(ops) => {
                let kinds: Vec<i32> = ops
                    .iter()
                    .map(ringkeeper::proto::records::write_op_opcode)
                    .collect();
                // create, create2 (→ create inside multi), setData, check, delete.
                assert_eq!(kinds, vec![1, 1, 5, 13, 2]);
            }
            other => panic!("{name}: {other:?}"),
        },
        "multi_container_and_ephemeral" => match ok(res) {
            Request::Multi(ops) => {
                let kinds: Vec<i32> = ops
                    .iter()
                    .map(ringkeeper::proto::records::write_op_opcode)
                    .collect();
                assert_eq!(kinds, vec![19, 1]);
            }
            other => panic!("{name}: {other:?}"),
        },
        "multi_empty" => assert_eq!(ok(res), Request::Multi(vec![])),
        "multi_read" => assert_eq!(
            ok(res),
            Request::MultiRead(vec![
                ReadOp::GetData { path: "/rk".into() },
                ReadOp::GetChildren {
                    path: "/rk/m1".into()
                },
                ReadOp::GetData {
                    path: "/nope".into()
                },
                ReadOp::GetChildren {
                    path: "/rk/m1".into()
                },
            ])
        ),
        "auth_digest" => {
            assert_eq!(h.xid, xid::AUTH);
            assert_eq!(
                ok(res),
                Request::Auth {
                    scheme: "digest".into(),
                    auth: b"rkuser:rkpass".to_vec()
                }
            );
        }
        "set_watches_current_zxid" => match ok(res) {
            Request::SetWatches(sw) => {
                assert_eq!(h.xid, xid::SET_WATCHES);
                assert!(!sw.v2);
                assert_eq!(sw.data, vec!["/rk"]);
                assert_eq!(sw.exist, vec!["/rk/notyet"]);
                assert_eq!(sw.child, vec!["/gone"]);
            }
            other => panic!("{name}: {other:?}"),
        },
        "set_watches2_persistent" => match ok(res) {
            Request::SetWatches(sw) => {
                assert!(sw.v2);
                assert_eq!(sw.persistent, vec!["/rk/w1"]);
                assert!(sw.persistent_recursive.is_empty() && sw.data.is_empty());
            }
            other => panic!("{name}: {other:?}"),
        },
        "add_watch_persistent_recursive" => {
            assert!(matches!(ok(res), Request::AddWatch { mode: 1, .. }))
        }
        "reconfig_disabled" => assert_eq!(
            ok(res),
            Request::Reconfig {
                joining_servers: None,
                leaving_servers: None,
                new_members: None,
                cur_config_id: -1
            }
        ),
        "who_am_i_unauthenticated" => assert_eq!(ok(res), Request::WhoAmI),
        "close_session" => assert_eq!(ok(res), Request::CloseSession),
        "check_standalone" => assert!(matches!(ok(res), Request::Check(c) if c.version == -1)),
        "unknown_opcode" => assert_eq!(res, &Err(RequestError::UnknownOpcode(999))),
        "get_data_truncated_body" | "create_truncated_body" => {
            assert_eq!(res, &Err(RequestError::Marshalling))
        }
        "get_ephemerals_all" => {
            assert_eq!(ok(res), Request::GetEphemerals { prefix: "/".into() })
        }
        _ => {
            let req = ok(res);
            assert_eq!(req.opcode(), h.opcode, "{name}: opcode");
            return false;
        }
    }
    true
}

#[test]
fn golden_vectors() {
    let vectors = load();
    assert!(
        vectors.len() >= 120,
        "expected the full capture, got {} vectors",
        vectors.len()
    );

    let mut conns_seen: HashSet<String> = HashSet::new();
    let (mut requests, mut specific, mut reencoded, mut responses, mut reply_frames, mut events) =
        (0, 0, 0, 0, 0, 0);
    let (mut handshakes, mut frame_errors, mut words) = (0, 0, 0);
    let mut non_canonical = Vec::new();
    let mut body_errors = 0;

    for v in &vectors {
        let name = v.name.as_str();
        // The capture does not record every connection's handshake (E, F, H start mid-
        // session), so the handshake vectors are known by name.
        let handshake = name.starts_with("connect_") || name.starts_with("reconnect_");
        let first_on_conn = conns_seen.insert(format!("{}/{}", v.phase, v.conn));
        assert!(
            !handshake || first_on_conn,
            "{name}: handshake on a used connection"
        );

        // Four-letter words: recognised before any framing; the text answer is admin's.
        let word = v.request.first_chunk::<4>().and_then(four_letter_word);
        if first_on_conn {
            if let Some(w) = word {
                assert!(name.starts_with("fourletter_"), "{name}: read as 4lw {w}");
                assert_eq!(v.request.len(), 4);
                assert!(v.server_closed);
                words += 1;
                continue;
            }
        }
        assert!(
            !name.starts_with("fourletter_"),
            "{name}: 4lw not recognised"
        );

        let mut request: Option<(RequestHeader, Result<Request, RequestError>)> = None;
        if !v.request.is_empty() {
            requests += 1;
            let frames = match split_all(name, &v.request, DEFAULT_MAX_PACKET) {
                Ok(f) => f,
                Err(e) => {
                    // The server closes without a reply.
                    assert!(v.server_closed && v.response.is_empty(), "{name}");
                    match name {
                        "frame_over_jute_maxbuffer" => {
                            assert_eq!(
                                e,
                                FrameError::TooLong {
                                    len: 0x100000,
                                    max: DEFAULT_MAX_PACKET
                                }
                            )
                        }
                        "frame_negative_length" => assert_eq!(e, FrameError::NegativeLength(-5)),
                        _ => panic!("{name}: unexpected frame error {e:?}"),
                    }
                    frame_errors += 1;
                    continue;
                }
            };
            assert_eq!(frames.len(), 1, "{name}: one request frame");
            let payload = &frames[0];

            if handshake {
                // The handshake.
                let c = ConnectRequest::decode(payload).expect("connect request");
                handshakes += 1;
                assert_eq!(c.protocol_version, 0, "{name}");
                assert_eq!(c.passwd.len(), PASSWD_LEN, "{name}");
                let want_ro = match name {
                    "connect_old_client_no_readonly_byte" => None,
                    "connect_readonly_client" => Some(true),
                    _ => Some(false),
                };
                assert_eq!(c.read_only, want_ro, "{name}");
                if name == "connect_new_session" {
                    assert_eq!(
                        (c.timeout_ms, c.session_id, c.last_zxid_seen),
                        (30000, 0, 0)
                    );
                }
                let mut out = Vec::new();
                c.encode(&mut out);
                assert_same(
                    name,
                    "re-encoded ConnectRequest",
                    &v.request,
                    &out,
                    &v.request_spans,
                );
                reencoded += 1;

                if v.response.is_empty() {
                    assert!(v.server_closed, "{name}: no handshake reply yet open");
                    continue;
                }
                let resp_frames =
                    split_all(name, &v.response, usize::MAX).expect("response frames");
                assert_eq!(resp_frames.len(), 1, "{name}");
                let mut r = Reader::new(&resp_frames[0]);
                assert_eq!(r.read_i32().unwrap(), 0, "{name}: protocolVersion");
                let timeout_ms = r.read_i32().unwrap();
                let session_id = r.read_i64().unwrap();
                let passwd = r.read_buffer().unwrap().expect("passwd").to_vec();
                let read_only = if r.is_empty() {
                    None
                } else {
                    Some(r.read_bool().unwrap())
                };
                assert!(r.is_empty(), "{name}");
                assert_eq!(
                    read_only.is_some(),
                    c.read_only.is_some(),
                    "{name}: readOnly byte rule"
                );
                let resp = ConnectResponse {
                    timeout_ms,
                    session_id,
                    passwd,
                    read_only,
                };
                let mut out = Vec::new();
                if timeout_ms == 0 {
                    // Invalid session: all zeros, nothing masked.
                    assert!(v.response_spans.is_empty(), "{name}");
                    assert_eq!(
                        resp,
                        ConnectResponse::invalid(c.read_only.map(|_| false)),
                        "{name}"
                    );
                    assert!(v.server_closed, "{name}");
                }
                resp.encode(&mut out);
                assert_same(
                    name,
                    "ConnectResponse",
                    &v.response,
                    &out,
                    &v.response_spans,
                );
                responses += 1;
                reply_frames += 1;
                continue;
            }

            let (h, res) = decode_request(payload).expect("request header");
            if check_request(name, &h, &res) {
                specific += 1;
            }
            if let Ok(req) = &res {
                let mut out = Vec::new();
                req.encode(h.xid, &mut out);
                let back = decode_request(&out[4..]).expect("re-decode");
                assert_eq!(back, (h, Ok(req.clone())), "{name}: re-encoding round trip");
                if masked(&out, &v.request_spans) == masked(&v.request, &v.request_spans) {
                    reencoded += 1;
                } else {
                    non_canonical.push(name.to_string());
                }
            } else {
                body_errors += 1;
            }
            request = Some((h, res));
        }

        if v.response.is_empty() {
            continue;
        }
        responses += 1;
        let resp_frames = split_all(name, &v.response, usize::MAX).expect("response frames");
        let mut actual = Vec::new();
        for f in &resp_frames {
            let mut r = Reader::new(f);
            let (rx, zxid, err) = (
                r.read_i32().unwrap(),
                r.read_i64().unwrap(),
                r.read_i32().unwrap(),
            );
            if rx == xid::NOTIFICATION {
                assert_eq!((zxid, err), (-1, 0), "{name}: notification header");
                let t = r.read_i32().unwrap();
                assert_eq!(r.read_i32().unwrap(), 3, "{name}: state");
                let path = r.read_string().unwrap();
                assert!(r.is_empty(), "{name}");
                let event = match t {
                    1 => EventType::NodeCreated,
                    2 => EventType::NodeDeleted,
                    3 => EventType::NodeDataChanged,
                    4 => EventType::NodeChildrenChanged,
                    other => panic!("{name}: event type {other}"),
                };
                encode_watch_event(&mut actual, event, &path);
                events += 1;
                continue;
            }
            let (h, res) = request
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: reply without request"));
            let expect_xid = if h.opcode == opcode::PING {
                xid::PING
            } else {
                h.xid
            };
            assert_eq!(rx, expect_xid, "{name}: reply xid");
            let err = code(err);
            reply_frames += 1;
            match res {
                Err(e) => {
                    assert_eq!(Some(err), e.reply_code(), "{name}: error for {e:?}");
                    if *e == RequestError::MultiReadWithWrite {
                        encode_multi_read_marshalling_error(&mut actual, rx, zxid);
                    } else {
                        encode_body(&mut actual, rx, zxid, err, &Body::Empty);
                    }
                    if let RequestError::UnknownOpcode(_) = e {
                        assert_eq!(zxid, -1, "{name}");
                        assert!(v.server_closed, "{name}");
                    }
                }
                Ok(_) if err != ErrorCode::Ok => {
                    assert!(r.is_empty(), "{name}: error reply with a body");
                    // Whatever body is passed, an error reply carries none.
                    encode_body(&mut actual, rx, zxid, err, &Body::Count(42));
                }
                Ok(req) => {
                    let body = decode_body(name, req, r.rest());
                    let start = actual.len();
                    encode_body(&mut actual, rx, zxid, err, &body);
                    let frame_len = actual.len() - start;
                    check_reordered_list(name, &body, rx, zxid, frame_len);
                }
            }
        }
        assert_same(name, "response", &v.response, &actual, &v.response_spans);
    }

    println!(
        "golden vectors: {} in file, {requests} requests decoded ({specific} with specific \
         checks, {reencoded} re-encoded byte for byte, non-canonical: {non_canonical:?}), \
         {handshakes} handshakes, {frame_errors} frame errors, {words} four-letter words, \
         {responses} responses re-encoded ({reply_frames} replies, {events} watch events)",
        vectors.len()
    );
    let with_request = vectors.iter().filter(|v| !v.request.is_empty()).count();
    let with_response = vectors
        .iter()
        .filter(|v| !v.response.is_empty() && !v.name.starts_with("fourletter_"))
        .count();
    assert_eq!(requests + words, with_request, "every request was checked");
    assert_eq!(responses, with_response, "every response was checked");
    assert_eq!(frame_errors, 2);
    assert_eq!(words, 3);
    assert_eq!(handshakes, 12, "handshake vectors");
    assert!(specific >= 45, "{specific} specific request checks");
    assert!(events >= 10, "{events} watch events");
    // Only multi_success is not canonical: its create2 op is re-encoded as create (type 1),
    // which is what ZooKeeper itself makes of it.
    assert_eq!(non_canonical, vec!["multi_success".to_string()]);
    // unknown_opcode, get_data_truncated_body, create_truncated_body.
    assert_eq!(body_errors, 3);
    assert_eq!(
        reencoded,
        requests - frame_errors - body_errors - non_canonical.len()
    );
}

#[test]
fn id_helpers_used_by_the_vectors() {
    // The digest identity the capture shows (base64(sha1("rkuser:rkpass"))).
    let acl = Acl {
        perms: 31,
        id: Id::new("digest", "rkuser:4qUOOcmElT7pbeggxNcoq/O3awQ="),
    };
    let mut out = Vec::new();
    encode_reply(
        &mut out,
        66,
        46,
        ErrorCode::Ok,
        &ReplyBody::Acl {
            acl: &[acl],
            stat: Stat::default(),
        },
    );
    assert!(hex(&out).contains("00000006646967657374"));
}
