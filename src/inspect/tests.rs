//! The tools against real data dirs: segments written by the glommio `Wal`, snapshots by
//! `log::snapshots::write`, then damaged byte by byte.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::survey::Survey;
use super::{log_dump, snapshot_dump, verify, InspectError};
use crate::log::{snapshots, LogRecord, Wal, WalOptions};
use crate::machine::{Machine, MachineConfig};
use crate::proto::types::{
    Acl, CheckVersionRequest, CreateMode, CreateRequest, Id, SessionId, SetDataRequest, Zxid,
};
use crate::snapshot::Meta;
use crate::txn::{Batch, Command, Op, OpResult, WriteOp};

fn run<F: Future<Output = ()>>(f: F) {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f);
}

fn cmd(session: SessionId, xid: i32, op: Op) -> Command {
    Command {
        session,
        xid,
        origin: 0,
        auth: vec![Id::new("ip", "127.0.0.1")],
        seen_zxid: i64::MAX,
        op,
    }
}

fn create_op(path: &str, data: &[u8], mode: CreateMode) -> WriteOp {
    WriteOp::Create {
        opcode: 1,
        req: CreateRequest {
            path: path.into(),
            data: Some(data.to_vec()),
            acl: Acl::open_unsafe(),
            flags: mode as i32,
            ttl: -1,
        },
    }
}

/// One record to write, owned.
enum Rec {
    Entry(u64, u64, Vec<u8>),
    Hard(u64, u64),
}

/// A data dir with a log of `LAST` entries over several small segments and snapshots at
/// `SNAPS`, and what a replay must find in it.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// (path, zxid) of every successful single create, in log order.
    creates: Vec<(String, Zxid)>,
    session: SessionId,
    commands: usize,
}

const LAST: u64 = 60;
const SNAPS: [u64; 2] = [20, 45];
/// The leader changes here: an empty entry of term 2.
const NEW_TERM_AT: u64 = 30;

impl Fixture {
    fn build() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut m = Machine::new(MachineConfig::default());
        let mut recs = vec![Rec::Hard(1, 0), Rec::Entry(1, 1, Vec::new())];
        let (mut creates, mut commands, mut session) = (Vec::new(), 0, 0);
        for index in 2..=LAST {
            let term = if index >= NEW_TERM_AT { 2 } else { 1 };
            if index == NEW_TERM_AT {
                recs.push(Rec::Entry(index, term, Vec::new()));
                recs.push(Rec::Hard(term, index - 1));
                continue;
            }
            let time_ms = 1_700_000_000_000 + index as i64;
            let commands_of: Vec<Command> = if index == 2 {
                vec![cmd(
                    0,
                    0,
                    Op::CreateSession {
                        timeout_ms: 30_000,
                        passwd: vec![7; 16],
                    },
                )]
            } else {
                let i = index as i32;
                let path = format!("/n{index:04}");
                let mut v = vec![
                    cmd(
                        session,
                        3 * i,
                        Op::Write(create_op(&path, &[b'x'; 200], CreateMode::Persistent)),
                    ),
                    // Wrong version: BadVersion, still a zxid.
                    cmd(
                        session,
                        3 * i + 1,
                        Op::Write(WriteOp::SetData(SetDataRequest {
                            path: path.clone(),
                            data: Some(b"abc".to_vec()),
                            version: 99,
                        })),
                    ),
                ];
                if index % 5 == 0 {
                    v.push(cmd(
                        session,
                        3 * i + 2,
                        Op::Multi(vec![
                            create_op(&format!("{path}/c"), b"", CreateMode::Persistent),
                            WriteOp::Check(CheckVersionRequest {
                                path: path.clone(),
                                version: 0,
                            }),
                        ]),
                    ));
                }
                v
            };
            let batch = Batch {
                time_ms,
                commands: commands_of,
            };
            commands += batch.commands.len();
            for a in m.apply_batch(term, &batch) {
                match &a.result {
                    OpResult::SessionCreated { session: s, .. } => session = *s,
                    OpResult::Created { path, .. } => creates.push((path.clone(), a.zxid)),
                    _ => {}
                }
            }
            let data = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
                .unwrap()
                .to_vec();
            recs.push(Rec::Entry(index, term, data));
            if index % 4 == 0 {
                recs.push(Rec::Hard(term, index));
            }
            if SNAPS.contains(&index) {
                let view = m.view();
                let meta = Meta {
                    index,
                    term,
                    last_zxid: view.last_zxid(),
                    voters: vec![1],
                    learners: vec![],
                    joint: None,
                };
                snapshots::write(&snapshots::dir_of(&dir), &view, &meta).unwrap();
            }
        }
        let log_dir = dir.join("log");
        run(async move {
            let opts = WalOptions {
                segment_bytes: 2 * 4096,
                ..WalOptions::default()
            };
            let (wal, _) = Wal::open(&log_dir, opts).await.unwrap();
            for r in &recs {
                let rec = match r {
                    Rec::Entry(index, term, data) => LogRecord::Entry {
                        index: *index,
                        term: *term,
                        data,
                        conf_change: false,
                    },
                    Rec::Hard(term, commit) => LogRecord::HardState {
                        term: *term,
                        vote: 1,
                        commit: *commit,
                    },
                };
                let t = wal.submit(&[rec]);
                wal.wait_durable(t).await.unwrap();
            }
            wal.close().await.unwrap();
        });
        Fixture {
            _tmp: tmp,
            dir,
            creates,
            session,
            commands,
        }
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    fn snapshot(&self, index: u64) -> PathBuf {
        snapshots::path_of(&snapshots::dir_of(&self.dir), index)
    }
}

fn dump_text(dir: &Path, json: bool) -> String {
    let mut out = Vec::new();
    let opts = log_dump::Options {
        json,
        ttl_enabled: false,
    };
    log_dump::dump(dir, &opts, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn verify_text(dir: &Path) -> (verify::Verdict, String) {
    let mut out = Vec::new();
    let v = verify::verify(dir, &verify::Options::default(), &mut out).unwrap();
    (v, String::from_utf8(out).unwrap())
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

#[test]
fn dump_shows_zxids_paths_and_results() {
    let f = Fixture::build();
    assert!(f.segments().len() >= 4, "segments: {:?}", f.segments());
    let text = dump_text(&f.dir, false);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"# 00000000000000000001.seg"), "{text}");
    assert!(lines.contains(&"1 1 - - - noop"), "{text}");
    assert!(
        lines.contains(&"hardstate term=1 vote=1 commit=0"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("2 1 0x100000001 0x0 0 createSession timeout=30000 ok session=")),
        "{text}"
    );
    for (path, zxid) in &f.creates {
        if path.ends_with("/c") {
            continue; // inside a multi
        }
        let want = format!(" {zxid:#x} {:#x} ", f.session);
        let line = lines
            .iter()
            .find(|l| l.contains(&format!(" create {path} len=200 ")))
            .unwrap_or_else(|| panic!("no create of {path}:\n{text}"));
        assert!(line.contains(&want) && line.ends_with(" ok"), "{line}");
    }
    // The new leader's term starts a new epoch.
    let after = format!("{} 2 0x200000001 ", NEW_TERM_AT + 1);
    assert!(lines.iter().any(|l| l.starts_with(&after)), "{text}");
    assert!(
        text.contains("setData /n0003 len=3 err=BadVersion"),
        "{text}"
    );
    assert!(text.contains("multi[2] /n0005/c,/n0005 ok"), "{text}");
    let n_commands = lines
        .iter()
        .filter(|l| !l.starts_with('#') && !l.starts_with("hardstate") && !l.ends_with("noop"))
        .count();
    assert_eq!(n_commands, f.commands);
}

#[test]
fn json_dump_parses_and_zxids_increase() {
    let f = Fixture::build();
    let text = dump_text(&f.dir, true);
    let mut last = 0i64;
    let mut created = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] != "command" {
            continue;
        }
        let zxid =
            i64::from_str_radix(v["zxid"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert!(zxid > last, "{line}");
        last = zxid;
        if let Some(p) = v["created"].as_str() {
            created.push((p.to_string(), zxid));
        }
    }
    assert_eq!(created, f.creates);
}

#[test]
fn healthy_dir_verifies() {
    let f = Fixture::build();
    let (v, text) = verify_text(&f.dir);
    assert!(v.healthy(), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for index in SNAPS {
        let name = format!("ok match {:020}.snap: equals", index);
        assert!(text.contains(&name), "{text}");
    }
    assert!(
        text.contains("ok reach: the log starts at entry 1"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with("healthy"),
        "{text}"
    );
    // The log dir itself works too.
    let (v, _) = verify_text(&f.dir.join("log"));
    assert!(v.healthy());
}

#[test]
fn flipped_byte_in_a_middle_record_fails_naming_the_file() {
    let f = Fixture::build();
    let survey = Survey::read(&f.dir.join("log")).unwrap();
    let seg = &survey.segments[1];
    let e = seg.entries[seg.entries.len() / 2];
    // Inside the payload (past the 16-byte header).
    flip(&seg.file.path, e.offset + 40);
    let (v, text) = verify_text(&f.dir);
    assert!(!v.healthy(), "{text}");
    let want = format!("FAIL segment {} at offset {}", seg.file.name(), e.offset);
    assert!(text.contains(&want), "{want}\n{text}");
    assert!(
        text.lines().last().unwrap().starts_with("NOT HEALTHY"),
        "{text}"
    );
    // The dump still prints everything it can, and says where the damage is.
    let dump = dump_text(&f.dir, false);
    assert!(
        dump.contains(&format!("# DAMAGE at offset {}", e.offset)),
        "{dump}"
    );
    assert!(dump.contains("(untrusted)"), "{dump}");
}

#[test]
fn flipped_byte_in_a_snapshot_fails_naming_the_file() {
    let f = Fixture::build();
    let snap = f.snapshot(SNAPS[0]);
    let len = std::fs::metadata(&snap).unwrap().len();
    flip(&snap, len / 2);
    let (v, text) = verify_text(&f.dir);
    assert!(!v.healthy(), "{text}");
    assert!(
        text.contains(&format!("FAIL snapshot {:020}.snap", SNAPS[0])),
        "{text}"
    );
    // The other snapshot is still checked against the replay.
    assert!(
        text.contains(&format!("ok match {:020}.snap", SNAPS[1])),
        "{text}"
    );
    let mut out = Vec::new();
    assert!(matches!(
        snapshot_dump::dump(&snap, false, &mut out),
        Err(InspectError::Snapshot(_))
    ));
}

#[test]
fn snapshot_that_disagrees_with_the_log_fails() {
    let f = Fixture::build();
    // A well-formed snapshot of a different state at index 20.
    let mut m = Machine::new(MachineConfig::default());
    let batch = Batch {
        time_ms: 1,
        commands: vec![cmd(
            0,
            0,
            Op::CreateSession {
                timeout_ms: 1000,
                passwd: vec![1; 16],
            },
        )],
    };
    m.apply_batch(1, &batch);
    let view = m.view();
    let meta = Meta {
        index: SNAPS[0],
        term: 1,
        last_zxid: view.last_zxid(),
        voters: vec![1],
        learners: vec![],
        joint: None,
    };
    snapshots::write(&snapshots::dir_of(&f.dir), &view, &meta).unwrap();
    let (v, text) = verify_text(&f.dir);
    assert!(!v.healthy(), "{text}");
    let want = format!(
        "FAIL match {:020}.snap: differs from the replayed state",
        SNAPS[0]
    );
    assert!(text.contains(&want), "{text}");
    assert!(text.contains("znodes differ, first / (differs)"), "{text}");
    assert!(text.contains("sessions differ"), "{text}");
}

#[test]
fn purged_log_replays_from_the_snapshot() {
    let f = Fixture::build();
    let survey = Survey::read(&f.dir.join("log")).unwrap();
    // Remove the segments the first snapshot covers entirely, as the server does.
    let mut removed = 0;
    for s in &survey.segments {
        if s.entries.last().is_some_and(|e| e.index <= SNAPS[0]) {
            std::fs::remove_file(&s.file.path).unwrap();
            removed += 1;
        } else {
            break;
        }
    }
    assert!(removed > 0);
    let (v, text) = verify_text(&f.dir);
    assert!(v.healthy(), "{text}");
    assert!(text.contains("ok reach"), "{text}");
    assert!(
        text.contains(&format!("ok match {:020}.snap", SNAPS[1])),
        "{text}"
    );

    let dump = dump_text(&f.dir, false);
    assert!(dump.contains("replayed from snapshot"), "{dump}");
    for (path, zxid) in &f.creates {
        let index: u64 = path[2..6].parse().unwrap();
        let Some(line) = dump
            .lines()
            .find(|l| l.contains(&format!(" create {path} ")))
        else {
            continue; // its segment is gone
        };
        if index <= SNAPS[1] {
            // The newest snapshot anchoring the log covers it: no zxid.
            assert!(
                line.starts_with(&format!("{index} 1 - "))
                    || line.starts_with(&format!("{index} 2 - ")),
                "{line}"
            );
        } else {
            assert!(line.contains(&format!(" {zxid:#x} ")), "{line}");
        }
    }

    // Past the snapshot before the newest, a bad newest one would have nothing to fall back
    // to: the server never purges that far.
    let survey = Survey::read(&f.dir.join("log")).unwrap();
    for s in &survey.segments {
        if s.entries.last().is_some_and(|e| e.index <= SNAPS[1]) {
            std::fs::remove_file(&s.file.path).unwrap();
        }
    }
    let (v, text) = verify_text(&f.dir);
    assert!(!v.healthy(), "{text}");
    let want = format!("FAIL reach {:020}.snap: the log starts at entry", SNAPS[0]);
    assert!(text.contains(&want), "{text}");

    // Without the snapshots nothing anchors the log any more.
    std::fs::remove_dir_all(snapshots::dir_of(&f.dir)).unwrap();
    let (v, text) = verify_text(&f.dir);
    assert!(!v.healthy(), "{text}");
    assert!(text.contains("FAIL reach"), "{text}");
    assert!(dump_text(&f.dir, false).contains("zxids and results unknown"));
}

#[test]
fn torn_tail_of_the_last_segment_is_a_note() {
    let f = Fixture::build();
    let survey = Survey::read(&f.dir.join("log")).unwrap();
    let last = survey.segments.iter().rev().find(|s| s.has_data()).unwrap();
    let mut b = std::fs::read(&last.file.path).unwrap();
    let at = last.end as usize + 16;
    b[at..at + 40].fill(0x5a);
    std::fs::write(&last.file.path, b).unwrap();
    let (v, text) = verify_text(&f.dir);
    assert!(v.healthy(), "{text}");
    let want = format!(
        "note segment {} at offset {}: torn tail",
        last.file.name(),
        last.end
    );
    assert!(text.contains(&want), "{text}");
    assert!(dump_text(&f.dir, false).contains(&format!("# note at offset {}: torn tail", last.end)));
}

#[test]
fn snapshot_dump_lists_nodes_and_sessions() {
    let f = Fixture::build();
    let mut out = Vec::new();
    snapshot_dump::dump(&f.snapshot(SNAPS[1]), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let nodes = 4
        + (3..=SNAPS[1]).filter(|i| *i != NEW_TERM_AT).count()
        + (3..=SNAPS[1])
            .filter(|i| i % 5 == 0 && *i != NEW_TERM_AT)
            .count();
    assert!(
        lines[0].starts_with(&format!("snapshot index={} term=2 ", SNAPS[1]))
            && lines[0].contains(&format!(" nodes={nodes} sessions=1 ")),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("/ 0x0 0x0 "), "{}", lines[1]);
    let (path, zxid) = &f.creates[0];
    let line = lines
        .iter()
        .find(|l| l.starts_with(&format!("{path} ")))
        .unwrap();
    assert!(
        line.starts_with(&format!("{path} {zxid:#x} "))
            && line.ends_with("acl=[world:anyone:cdrwa]"),
        "{line}"
    );
    // Tree order: a parent right before its child.
    let at = lines.iter().position(|l| l.starts_with("/n0005 ")).unwrap();
    assert!(lines[at + 1].starts_with("/n0005/c "), "{text}");
    assert_eq!(lines.len(), 1 + nodes + 1);
    assert!(lines[nodes + 1].starts_with(&format!(
        "session {:#x} timeout=30000 ephemerals=0 last_xid=",
        f.session
    )));
    // A data dir means its newest snapshot; JSON lines parse.
    let mut out = Vec::new();
    snapshot_dump::dump(&f.dir, true, &mut out).unwrap();
    for line in String::from_utf8(out).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn garbage_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let snap = tmp.path().join("snap");
    crate::log::durable::create_dir_all(&log).unwrap();
    crate::log::durable::create_dir_all(&snap).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    std::fs::write(log.join("00000000000000000001.seg"), noise(8192)).unwrap();
    std::fs::write(log.join("00000000000000000002.seg"), noise(100)).unwrap();
    std::fs::write(log.join("00000000000000000004.seg"), vec![0u8; 4096]).unwrap();
    let mut s = crate::snapshot::MAGIC.to_vec();
    s.extend_from_slice(&noise(5000));
    std::fs::write(snap.join("00000000000000000007.snap"), &s).unwrap();
    let (v, text) = verify_text(tmp.path());
    assert!(!v.healthy(), "{text}");
    assert!(
        text.contains("FAIL snapshot 00000000000000000007.snap"),
        "{text}"
    );
    assert!(text.contains("segments missing"), "{text}");
    dump_text(tmp.path(), false);
    dump_text(tmp.path(), true);
    let mut out = Vec::new();
    assert!(snapshot_dump::dump(&snap.join("00000000000000000007.snap"), false, &mut out).is_err());
}

#[test]
fn unreadable_input_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let missing = tmp.path().join("nope");
    assert!(matches!(
        verify::verify(&missing, &verify::Options::default(), &mut out),
        Err(InspectError::Io { .. })
    ));
    assert!(matches!(
        verify::verify(tmp.path(), &verify::Options::default(), &mut out),
        Err(InspectError::NotDataDir(_))
    ));
    assert!(snapshot_dump::dump(tmp.path(), false, &mut out).is_err());
}
