//! Tests against a data directory written by a real ZooKeeper 3.8
//! (tests/testdata/zk-datadir, made by scripts/make-zk-fixture.py) and damaged copies of it.

use std::fs;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::*;
use crate::proto::types::Id;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/zk-datadir")
}

fn fixture_v2() -> PathBuf {
    fixture_dir().join("version-2")
}

fn expected() -> Value {
    let text = fs::read_to_string(fixture_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// Fixture file names of one kind, ordered by zxid.
fn names(prefix: &str) -> Vec<String> {
    let mut v: Vec<(i64, String)> = fs::read_dir(fixture_v2())
        .expect("fixture dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .map(|n| {
            (
                i64::from_str_radix(&n[prefix.len()..], 16).expect("hex name"),
                n,
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// A scratch copy of the fixture's version-2 directory.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v2 = tmp.path().join("version-2");
    crate::log::durable::create_dir_all(&v2).expect("mkdir");
    for e in fs::read_dir(fixture_v2()).expect("fixture dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), v2.join(e.file_name())).expect("copy");
    }
    (tmp, v2)
}

fn i64_of(v: &Value) -> i64 {
    v.as_i64().expect("integer")
}

fn stat_of(v: &Value) -> Stat {
    Stat {
        czxid: i64_of(&v["czxid"]),
        mzxid: i64_of(&v["mzxid"]),
        ctime: i64_of(&v["ctime"]),
        mtime: i64_of(&v["mtime"]),
        version: i64_of(&v["version"]) as i32,
        cversion: i64_of(&v["cversion"]) as i32,
        aversion: i64_of(&v["aversion"]) as i32,
        ephemeral_owner: i64_of(&v["ephemeralOwner"]),
        data_length: i64_of(&v["dataLength"]) as i32,
        num_children: i64_of(&v["numChildren"]) as i32,
        pzxid: i64_of(&v["pzxid"]),
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Asserts the image holds exactly what a client read from the live ZooKeeper before it was
/// killed: every node, its data (null vs empty), ACL and full Stat, and the live sessions.
fn assert_matches_expected(img: &ZkImage) {
    let exp = expected();
    assert_eq!(img.last_zxid, i64_of(&exp["last_zxid"]), "last zxid");
    let want_nodes = exp["nodes"].as_array().expect("nodes");
    let got: Vec<&str> = img.nodes.iter().map(|n| n.path.as_str()).collect();
    let want: Vec<&str> = want_nodes
        .iter()
        .map(|n| n["path"].as_str().expect("path"))
        .collect();
    assert_eq!(got, want, "the same znodes, in path order");
    for (node, w) in img.nodes.iter().zip(want_nodes) {
        let data = w["data"].as_str().map(hex_decode);
        assert_eq!(node.data, data, "data of {}", node.path);
        let acl: Vec<Acl> = w["acl"]
            .as_array()
            .expect("acl")
            .iter()
            .map(|a| Acl {
                perms: i64_of(&a["perms"]) as i32,
                id: Id::new(
                    a["scheme"].as_str().expect("scheme"),
                    a["id"].as_str().expect("id"),
                ),
            })
            .collect();
        assert_eq!(node.acl, acl, "ACL of {}", node.path);
        assert_eq!(node.stat, stat_of(&w["stat"]), "stat of {}", node.path);
    }
    let sessions: Vec<ZkSession> = exp["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| ZkSession {
            id: i64_of(&s["id"]),
            timeout_ms: i64_of(&s["timeout_ms"]) as i32,
        })
        .collect();
    assert_eq!(img.sessions, sessions, "live sessions");
}

fn node<'a>(img: &'a ZkImage, path: &str) -> &'a ZkNode {
    img.nodes
        .iter()
        .find(|n| n.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

#[test]
fn fixture_matches_what_zookeeper_served() {
    let img = load_dir(&fixture_dir(), None).expect("fixture loads");
    assert_matches_expected(&img);
    let snaps = names("snapshot.");
    let newest = snaps.last().expect("a snapshot");
    assert_eq!(img.sources.first(), Some(newest));
    assert!(
        img.sources.len() >= 2,
        "a log after the snapshot: {:?}",
        img.sources
    );
    assert!(img.txns_replayed > 0);
    assert!(img.last_zxid > img.snapshot_zxid);
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    // what the client Stat hides: container and TTL markers
    assert_eq!(node(&img, "/app/box").kind, NodeKind::Container);
    assert_eq!(node(&img, "/app/empty-box").kind, NodeKind::Container);
    assert_eq!(node(&img, "/app/ttl-long").kind, NodeKind::Ttl(3_600_000));
    let seq_ttl = img
        .nodes
        .iter()
        .find(|n| n.path.starts_with("/app/ttl-seq-"))
        .expect("sequential TTL node");
    assert_eq!(seq_ttl.kind, NodeKind::Ttl(7_200_000));
    assert_eq!(node(&img, "/app/config").kind, NodeKind::Normal);
    // the stored cversion counts creations; clients see creations + deletions
    let root = node(&img, "/");
    assert_eq!(
        root.stat.cversion,
        root.creations * 2 - root.stat.num_children
    );
}

#[test]
fn version2_dir_and_separate_log_dir_are_accepted() {
    let img = load_dir(&fixture_v2(), None).expect("the version-2 dir itself");
    assert_matches_expected(&img);

    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, logs) = (tmp.path().join("data"), tmp.path().join("logs"));
    crate::log::durable::create_dir_all(&data.join("version-2")).expect("mkdir");
    crate::log::durable::create_dir_all(&logs.join("version-2")).expect("mkdir");
    for e in fs::read_dir(fixture_v2()).expect("fixture") {
        let e = e.expect("entry");
        let name = e.file_name();
        let dir = if name.to_string_lossy().starts_with("log.") {
            &logs
        } else {
            &data
        };
        fs::copy(e.path(), dir.join("version-2").join(&name)).expect("copy");
    }
    let img = load_dir(&data, Some(&logs)).expect("dataDir + dataLogDir");
    assert_matches_expected(&img);
}

#[test]
fn every_snapshot_replays_to_the_same_tree() {
    // Dropping the newer snapshots makes the load start further back and replay more of the
    // log; ZooKeeper would end in the same state either way.
    let snaps = names("snapshot.");
    for keep in 1..=snaps.len() {
        let (_tmp, v2) = scratch();
        for newer in &snaps[keep..] {
            fs::remove_file(v2.join(newer)).expect("rm");
        }
        let img = load_dir(&v2, None).expect("loads");
        assert_eq!(img.sources[0], snaps[keep - 1]);
        assert_matches_expected(&img);
    }
}

#[test]
fn flipped_byte_in_a_snapshot_falls_back_to_the_previous_one() {
    let snaps = names("snapshot.");
    let newest = snaps.last().expect("snapshot");
    let full = load_dir(&fixture_dir(), None).expect("loads");
    let (_tmp, v2) = scratch();
    let path = v2.join(newest);
    let mut bytes = fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&path, &bytes).expect("write");

    let img = load_dir(&v2, None).expect("falls back");
    assert_eq!(img.sources[0], snaps[snaps.len() - 2]);
    assert!(img.snapshot_zxid < full.snapshot_zxid);
    assert!(img.txns_replayed > full.txns_replayed, "more of the log");
    assert!(
        img.warnings.iter().any(|w| w.contains(newest.as_str())),
        "{:?}",
        img.warnings
    );
    assert_matches_expected(&img);

    assert!(parse_snapshot(&bytes).is_err());
}

#[test]
fn snapshot_checksum_covers_node_data() {
    // flip a byte inside a node's data: everything still decodes, only the seal tells
    let newest = names("snapshot.").pop().expect("snapshot");
    let mut bytes = fs::read(fixture_v2().join(&newest)).expect("read");
    let snap = parse_snapshot(&bytes).expect("fixture snapshot is valid");
    assert!(snap.digest.is_some(), "3.8 appends a digest");
    let binary = snap
        .nodes
        .iter()
        .find(|n| n.path == "/app/binary")
        .expect("/app/binary");
    let path_len = 4 + binary.path.len();
    let data_at = binary.offset as usize + path_len + 4;
    bytes[data_at + 10] ^= 0xff;
    let err = parse_snapshot(&bytes).expect_err("corrupt");
    assert!(matches!(err.reason, FormatReason::Checksum { .. }), "{err}");
}

#[test]
fn no_valid_snapshot_is_an_error_naming_them() {
    let (_tmp, v2) = scratch();
    for name in names("snapshot.") {
        let p = v2.join(&name);
        let mut b = fs::read(&p).expect("read");
        b.truncate(b.len() - 1); // a snapshot cut short: no seal
        fs::write(&p, b).expect("write");
    }
    match load_dir(&v2, None) {
        Err(ZkDataError::NoValidSnapshot { rejected, .. }) => {
            assert_eq!(rejected.len(), names("snapshot.").len())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn compressed_snapshot_is_refused_clearly() {
    let (_tmp, v2) = scratch();
    let newest = names("snapshot.").pop().expect("snapshot");
    crate::log::durable::rename(&v2.join(&newest), &v2.join(format!("{newest}.snappy")))
        .expect("rename");
    let err = load_dir(&v2, None).expect_err("compressed");
    assert!(
        matches!(
            err,
            ZkDataError::CompressedSnapshot {
                method: "snappy",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not supported"));
}

/// The newest log, and the offsets of its records.
fn newest_log() -> (String, Vec<u8>, Vec<u64>) {
    let name = names("log.").pop().expect("a log");
    let bytes = fs::read(fixture_v2().join(&name)).expect("read");
    let log = parse_txn_log_full(&bytes).expect("parses");
    let offsets = log.txns.iter().map(|t| t.offset).collect();
    (name, bytes, offsets)
}

#[test]
fn fixture_logs_end_as_zookeeper_left_them() {
    let logs = names("log.");
    for (i, name) in logs.iter().enumerate() {
        let bytes = fs::read(fixture_v2().join(name)).expect("read");
        let log = parse_txn_log_full(&bytes).expect("parses");
        assert!(!log.txns.is_empty());
        if i + 1 == logs.len() {
            // the log ZooKeeper was writing when killed keeps its preallocated zeros
            assert!(matches!(log.end, LogEnd::Padding { .. }), "{:?}", log.end);
        } else {
            // the script cut the zero padding off the others
            assert_eq!(log.end, LogEnd::Eof);
        }
        // zxids are consecutive within a file and named by the first one
        let first = log_name_zxid(name).expect("name");
        for (k, t) in log.txns.iter().enumerate() {
            assert_eq!(t.zxid, first + k as i64, "{name}");
            // 3.8 logs the tree digest after every txn that can change the tree
            let is_error = matches!(t.body, TxnBody::Error { .. });
            assert_eq!(t.digest.is_some(), !is_error, "{name} {:#x}", t.zxid);
        }
    }
}

#[test]
fn torn_last_record_stops_cleanly() {
    let (name, bytes, offsets) = newest_log();
    let n = offsets.len();
    let last = offsets[n - 1] as usize;
    let end = bytes[last..]
        .iter()
        .rposition(|&b| b != 0)
        .map(|p| last + p + 1)
        .expect("the last record");
    let full = load_dir(&fixture_dir(), None).expect("loads");
    for cut in [last + 1, last + 8, last + 12, last + 13, last + 40, end - 1] {
        // cut short (a log whose padding is gone) ...
        let log = parse_txn_log_full(&bytes[..cut]).expect("torn tail is not an error");
        assert_eq!(log.txns.len(), n - 1, "cut at {cut}");
        // (the first 4 bytes of a record are the zero high half of its checksum, so a cut
        // that early leaves only zeros: indistinguishable from padding)
        assert!(
            matches!(log.end, LogEnd::Torn { offset, .. } | LogEnd::Padding { offset }
                if offset == last as u64),
            "{:?}",
            log.end
        );
        // ... or half written into the preallocated zeros
        let mut zeroed = bytes.clone();
        zeroed[cut..].fill(0);
        let log = parse_txn_log_full(&zeroed).expect("torn tail is not an error");
        assert_eq!(log.txns.len(), n - 1, "zeroed from {cut}");

        let (_tmp, v2) = scratch();
        fs::write(v2.join(&name), &zeroed).expect("write");
        let img = load_dir(&v2, None).expect("loads");
        assert_eq!(img.last_zxid, full.last_zxid - 1);
        assert_eq!(img.txns_replayed, full.txns_replayed - 1);
        if matches!(log.end, LogEnd::Torn { .. }) {
            assert!(
                img.warnings.iter().any(|w| w.contains("torn")),
                "{:?}",
                img.warnings
            );
        }
    }
    // a bad checksum in the last record is a torn write too
    let mut flipped = bytes.clone();
    flipped[last + 30] ^= 1;
    let log = parse_txn_log_full(&flipped).expect("torn");
    assert_eq!(log.txns.len(), n - 1);
    assert!(matches!(
        log.end,
        LogEnd::Torn {
            problem: RecordProblem::Checksum { .. },
            ..
        }
    ));
}

#[test]
fn flipped_byte_in_a_middle_record_is_an_error_naming_file_and_offset() {
    let (name, bytes, offsets) = newest_log();
    let mid = offsets[offsets.len() / 2];
    for delta in [0usize, 5, 9, 20] {
        let mut damaged = bytes.clone();
        damaged[mid as usize + delta] ^= 0x10;
        let err = parse_txn_log(&damaged).expect_err("corrupt");
        assert_eq!(err.offset, mid, "flip at +{delta}");
        assert!(
            matches!(err.reason, FormatReason::CorruptRecord { .. }),
            "{err}"
        );

        let (_tmp, v2) = scratch();
        fs::write(v2.join(&name), &damaged).expect("write");
        match load_dir(&v2, None) {
            Err(ZkDataError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, v2.join(&name));
                assert_eq!(offset, mid);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_missing_log_file_is_a_gap_not_a_silent_loss() {
    // start from the oldest snapshot and lose a log in the middle of what it needs
    let logs = names("log.");
    let snaps = names("snapshot.");
    let (_tmp, v2) = scratch();
    for newer in &snaps[1..] {
        fs::remove_file(v2.join(newer)).expect("rm");
    }
    let lost = &logs[logs.len() - 2];
    fs::remove_file(v2.join(lost)).expect("rm");
    let err = load_dir(&v2, None).expect_err("txns missing");
    assert!(matches!(err, ZkDataError::ZxidGap { .. }), "{err}");
}

#[test]
fn random_damage_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed_2c00);
    let files: Vec<(String, Vec<u8>)> = names("snapshot.")
        .into_iter()
        .chain(names("log."))
        .map(|n| {
            let b = fs::read(fixture_v2().join(&n)).expect("read");
            (n, b)
        })
        .collect();
    for round in 0..400 {
        let (name, orig) = &files[round % files.len()];
        let mut b = orig.clone();
        match rng.gen_range(0..4) {
            0 => {
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
            }
            1 => b.truncate(rng.gen_range(0..b.len())),
            2 => {
                let i = rng.gen_range(0..b.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                b.splice(i..i, junk);
            }
            _ => {
                // plausible-looking huge lengths where a length field may be
                let i = rng.gen_range(0..b.len().saturating_sub(4));
                b[i..i + 4].copy_from_slice(&rng.gen_range(i32::MAX - 16..=i32::MAX).to_be_bytes());
            }
        }
        // neither parser cares which kind of file it is given
        let _ = parse_snapshot(&b);
        let _ = parse_txn_log_full(&b);
        if round % 20 == 0 {
            let (_tmp, v2) = scratch();
            fs::write(v2.join(name), &b).expect("write");
            let _ = load_dir(&v2, None);
        }
    }
    for len in [0usize, 1, 5, 16, 17, 100, 4096] {
        let b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = parse_snapshot(&b);
        let _ = parse_txn_log_full(&b);
    }
}

#[test]
fn adler32_matches_java() {
    assert_eq!(adler32(b""), 1);
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    // long input crosses the reduction interval
    let big = vec![0xffu8; 100_000];
    let (mut a, mut b) = (1u64, 0u64);
    for &x in &big {
        a = (a + u64::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!(u64::from(adler32(&big)), (b << 16) | a);
}

#[test]
fn file_names() {
    assert_eq!(
        snapshot_name_zxid("snapshot.16f"),
        Some((0x16f, SnapCompression::Plain))
    );
    assert_eq!(
        snapshot_name_zxid("snapshot.1a.GZ"),
        Some((0x1a, SnapCompression::Gzip))
    );
    assert_eq!(
        snapshot_name_zxid("snapshot.1a.snappy"),
        Some((0x1a, SnapCompression::Snappy))
    );
    assert_eq!(snapshot_name_zxid("snapshot.-1"), None);
    assert_eq!(snapshot_name_zxid("snapshot"), None);
    assert_eq!(snapshot_name_zxid("log.10"), None);
    assert_eq!(log_name_zxid("log.100000001"), Some(0x1_0000_0001));
    assert_eq!(log_name_zxid("log.zz"), None);
}

#[test]
fn empty_and_padding_only_logs_hold_nothing() {
    assert_eq!(parse_txn_log(&[]).expect("empty"), vec![]);
    let mut b = b"ZKLG\0\0\0\x02".to_vec();
    b.extend_from_slice(&[0; 8]);
    let log = parse_txn_log_full(&b).expect("header only");
    assert_eq!((log.txns.len(), log.end), (0, LogEnd::Eof));
    b.extend_from_slice(&[0; 4096]);
    let log = parse_txn_log_full(&b).expect("preallocated");
    assert_eq!(log.end, LogEnd::Padding { offset: 16 });
    b[0] = b'X';
    assert!(matches!(
        parse_txn_log(&b).expect_err("magic").reason,
        FormatReason::BadMagic { .. }
    ));
}

#[test]
fn fuzzy_snapshots_converge() {
    // A fuzzy snapshot already holds some of the txns after its zxid. Renaming a snapshot to
    // an earlier zxid makes the load replay txns the snapshot already holds, the extreme case
    // of that: replay must tolerate NodeExists/NoNode exactly as ZooKeeper does and end in
    // the same tree.
    let snaps = names("snapshot.");
    let mut tolerated = 0;
    for (i, name) in snaps.iter().enumerate().skip(1) {
        let zxid = snapshot_name_zxid(name).expect("name").0;
        let prev = snapshot_name_zxid(&snaps[i - 1]).expect("name").0;
        for k in [1, 2, 5, 12] {
            if zxid - k <= prev {
                continue;
            }
            let (_tmp, v2) = scratch();
            for newer in &snaps[i..] {
                fs::remove_file(v2.join(newer)).expect("rm");
            }
            fs::copy(
                fixture_v2().join(name),
                v2.join(format!("snapshot.{:x}", zxid - k)),
            )
            .expect("copy");
            let img = load_dir(&v2, None).expect("loads");
            assert_eq!(img.snapshot_zxid, zxid - k);
            assert_matches_expected(&img);
            tolerated += img.warnings.iter().filter(|w| w.contains("failed")).count();
        }
    }
    assert!(tolerated > 0, "some replayed txns hit NodeExists/NoNode");
}

#[test]
fn fixture_logs_hold_every_txn_type() {
    let mut seen = std::collections::BTreeSet::new();
    let mut close_with_paths = false;
    for name in names("log.") {
        let bytes = fs::read(fixture_v2().join(&name)).expect("read");
        for t in parse_txn_log(&bytes).expect("parses") {
            seen.insert(t.txn_type);
            if let TxnBody::CloseSession { paths: Some(p) } = &t.body {
                close_with_paths |= !p.is_empty();
            }
            if let TxnBody::Multi(ops) = &t.body {
                for op in ops {
                    seen.insert(op.txn_type);
                    assert!(op.body.is_some(), "3.8 applies every op it writes");
                }
            }
        }
    }
    use crate::proto::types::opcode::*;
    for t in [
        CREATE,
        DELETE,
        SET_DATA,
        SET_ACL,
        CHECK,
        MULTI,
        CREATE2,
        CREATE_CONTAINER,
        DELETE_CONTAINER,
        CREATE_TTL,
        CREATE_SESSION,
        CLOSE_SESSION,
        ERROR,
    ] {
        assert!(seen.contains(&t), "no txn of type {t} in the fixture");
    }
    assert!(close_with_paths, "a closeSession naming its ephemerals");
}

// ---- hand-built inputs, for what a healthy server never writes -------------------------

use crate::proto::jute::Writer;
use crate::proto::types::opcode;

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: 31,
        id: Id::new("world", "anyone"),
    }]
}

fn ip_acl() -> Vec<Acl> {
    vec![Acl {
        perms: 1,
        id: Id::new("ip", "10.0.0.1"),
    }]
}

/// A sealed snapshot: (path as stored, acl id, ephemeralOwner, stored cversion) per node.
fn snapshot_bytes(
    sessions: &[(i64, i32)],
    acls: &[(i64, Vec<Acl>)],
    nodes: &[(&str, i64, i64, i32)],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.write_i32(SNAP_MAGIC);
    w.write_i32(2);
    w.write_i64(0);
    w.write_i32(sessions.len() as i32);
    for (id, to) in sessions {
        w.write_i64(*id);
        w.write_i32(*to);
    }
    w.write_i32(acls.len() as i32);
    for (id, list) in acls {
        w.write_i64(*id);
        w.write_acl_vec(list);
    }
    for (path, acl, owner, cversion) in nodes {
        w.write_str(path);
        w.write_buffer(Some(b"d"));
        w.write_i64(*acl);
        for v in [1i64, 1, 1, 1] {
            w.write_i64(v); // czxid mzxid ctime mtime
        }
        w.write_i32(0); // version
        w.write_i32(*cversion);
        w.write_i32(0); // aversion
        w.write_i64(*owner);
        w.write_i64(1); // pzxid
    }
    w.write_str("/");
    let sum = adler32(&out);
    let mut w = Writer::new(&mut out);
    w.write_i64(i64::from(sum));
    w.write_str("/");
    out
}

fn txn(zxid: i64, client_id: i64, txn_type: i32, body: TxnBody) -> ZkTxn {
    ZkTxn {
        offset: 0,
        client_id,
        cxid: 0,
        zxid,
        time: 1000 + zxid,
        txn_type,
        body,
        digest: None,
    }
}

fn create(path: &str, parent_cversion: i32, ephemeral: bool) -> CreateTxn {
    CreateTxn {
        path: path.into(),
        data: None,
        acl: None,
        ephemeral,
        parent_cversion,
    }
}

fn replay_of(snap_bytes: &[u8], txns: &[ZkTxn]) -> replay::ReplayOutput {
    let snap = parse_snapshot(snap_bytes).expect("valid snapshot");
    let mut r = ZkReplay::new(&snap, 10).expect("tree");
    for t in txns {
        r.apply(t).expect("applies");
    }
    r.finish().expect("finishes")
}

fn out_node<'a>(out: &'a replay::ReplayOutput, path: &str) -> Option<&'a ZkNode> {
    out.nodes.iter().find(|n| n.path == path)
}

#[test]
fn snapshot_structure_errors_name_the_offending_node() {
    let ok = snapshot_bytes(&[], &[], &[("", -1, 0, 0), ("/a", -1, 0, 0)]);
    let snap = parse_snapshot(&ok).expect("valid");
    assert_eq!(snap.digest, None, "pre-3.6 snapshots have no digest");
    assert_eq!(snap.nodes[1].path, "/a");

    type Case<'a> = (&'a [(&'a str, i64, i64, i32)], fn(&FormatReason) -> bool);
    let cases: [Case; 4] = [
        (&[("/a", -1, 0, 0)], |r| {
            matches!(r, FormatReason::NoRoot(_))
        }),
        (
            &[("", -1, 0, 0), ("/a/b", -1, 0, 0)],
            |r| matches!(r, FormatReason::Orphan(p) if p == "/a/b"),
        ),
        (&[("", -1, 0, 0), ("/a", -1, 0, 0), ("/a", -1, 0, 0)], |r| {
            matches!(r, FormatReason::Duplicate(_))
        }),
        (&[("", -1, 0, 0), ("a", -1, 0, 0)], |r| {
            matches!(r, FormatReason::BadPath(_))
        }),
    ];
    for (nodes, want) in cases {
        let bytes = snapshot_bytes(&[], &[], nodes);
        let err = parse_snapshot(&bytes).expect_err("invalid");
        assert!(want(&err.reason), "{err}");
        assert!(err.offset >= 24, "points at a node, not the header: {err}");
    }

    // an absurd session count is refused before anything is allocated for it
    let mut bytes = ok.clone();
    bytes[16..20].copy_from_slice(&i32::MAX.to_be_bytes());
    let err = parse_snapshot(&bytes).expect_err("count");
    assert_eq!(err.offset, 16);
    assert!(matches!(err.reason, FormatReason::BadCount { .. }), "{err}");
}

#[test]
fn snapshot_kinds_and_unknown_acls() {
    let ttl_owner = (0xFF00_0000_0000_0000u64 | 5000) as i64;
    let session = 0x0100_0000_0000_0001;
    let bytes = snapshot_bytes(
        &[(session, 4000), (ttl_owner + 1, 4000)],
        &[(1, ip_acl())],
        &[
            ("", -1, 0, 0),
            ("/c", 1, i64::MIN, 0),
            ("/t", -1, ttl_owner, 0),
            // a live session shaped like a TTL marker (server id 255) stays an ephemeral
            ("/s255", -1, ttl_owner + 1, 0),
            ("/e", -1, session, 0),
        ],
    );
    let out = replay_of(&bytes, &[]);
    let get = |p| out_node(&out, p).expect(p);
    assert_eq!(get("/c").kind, NodeKind::Container);
    assert_eq!(get("/c").acl, ip_acl());
    assert_eq!(get("/c").stat.ephemeral_owner, 0);
    assert_eq!(get("/t").kind, NodeKind::Ttl(5000));
    assert_eq!(get("/t").stat.ephemeral_owner, 0);
    assert_eq!(get("/s255").kind, NodeKind::Normal);
    assert_eq!(get("/s255").stat.ephemeral_owner, ttl_owner + 1);
    assert_eq!(get("/e").stat.ephemeral_owner, session);
    assert_eq!(get("/").acl, open_acl());

    // a node whose ACL id the snapshot lacks (the fuzzy-snapshot race) is only an error if
    // replay does not hand that id out again
    let racy = snapshot_bytes(&[], &[(1, ip_acl())], &[("", -1, 0, 0), ("/r", 2, 0, 0)]);
    let snap = parse_snapshot(&racy).expect("parses");
    let err = ZkReplay::new(&snap, 10)
        .expect("tree")
        .finish()
        .expect_err("unknown ACL");
    assert!(
        matches!(&err.reason, FormatReason::UnknownAcl { path, id: 2 } if path == "/r"),
        "{err}"
    );
    assert_eq!(err.offset, snap.nodes[1].offset);
    let mut c = create("/new", -1, false);
    c.acl = Some(open_acl()); // a new list: gets id 2, which /r was waiting for
    let out = replay_of(&racy, &[txn(11, 1, opcode::CREATE, TxnBody::Create(c))]);
    assert_eq!(out_node(&out, "/r").expect("/r").acl, open_acl());
}

#[test]
fn replay_follows_datatree() {
    let session = 0x0100_0000_0000_0007;
    let base = snapshot_bytes(
        &[(session, 4000)],
        &[],
        &[("", -1, 0, 1), ("/p", -1, 0, 3), ("/p/x", -1, 0, 0)],
    );
    let out = replay_of(
        &base,
        &[
            // create with parentCVersion −1 (a V0 record): the parent's counter + 1
            txn(
                11,
                1,
                opcode::CREATE,
                TxnBody::Create(create("/p/a", -1, false)),
            ),
            // NodeExists for `create` still moves the parent's cversion/pzxid forward ...
            txn(
                12,
                1,
                opcode::CREATE,
                TxnBody::Create(create("/p/x", 9, false)),
            ),
            // ... but not for create2 (3.8 only does it for opcode 1)
            txn(
                13,
                1,
                opcode::CREATE2,
                TxnBody::Create(create("/p/a", 20, false)),
            ),
            // an ephemeral of a session that never closes and is not alive either
            txn(
                14,
                77,
                opcode::CREATE,
                TxnBody::Create(create("/p/dead", 11, true)),
            ),
            txn(
                15,
                session,
                opcode::CREATE,
                TxnBody::Create(create("/p/mine", 12, true)),
            ),
            // delete removes without touching the stored cversion
            txn(
                16,
                1,
                opcode::DELETE,
                TxnBody::Delete {
                    path: "/p/a".into(),
                },
            ),
            // a NoNode delete still advances the parent's pzxid
            txn(
                17,
                1,
                opcode::DELETE,
                TxnBody::Delete {
                    path: "/p/gone".into(),
                },
            ),
            // setACL with a null list is the open ACL; an empty list stays empty
            txn(
                18,
                1,
                opcode::SET_ACL,
                TxnBody::SetAcl {
                    path: "/p/x".into(),
                    acl: Some(vec![]),
                    version: 4,
                },
            ),
            // the root is "/" to setData
            txn(
                19,
                1,
                opcode::SET_DATA,
                TxnBody::SetData {
                    path: "/".into(),
                    data: Some(b"root".to_vec()),
                    version: 2,
                },
            ),
            // a multi stops at an op 3.8 cannot apply inside a multi
            txn(
                20,
                1,
                opcode::MULTI,
                TxnBody::Multi(vec![
                    MultiOp {
                        txn_type: opcode::CREATE,
                        body: Some(TxnBody::Create(create("/m1", 2, false))),
                    },
                    MultiOp {
                        txn_type: opcode::CREATE2,
                        body: None,
                    },
                    MultiOp {
                        txn_type: opcode::CREATE,
                        body: Some(TxnBody::Create(create("/m2", 3, false))),
                    },
                ]),
            ),
            // a failed multi (error ops) changes nothing
            txn(
                21,
                1,
                opcode::MULTI,
                TxnBody::Multi(vec![
                    MultiOp {
                        txn_type: opcode::CREATE,
                        body: Some(TxnBody::Create(create("/never", 4, false))),
                    },
                    MultiOp {
                        txn_type: opcode::ERROR,
                        body: Some(TxnBody::Error { err: -101 }),
                    },
                ]),
            ),
        ],
    );
    let p = out_node(&out, "/p").expect("/p");
    assert_eq!(p.creations, 12);
    assert_eq!(p.stat.num_children, 2, "x and mine; dead's session is gone");
    assert_eq!(p.stat.cversion, 12 * 2 - 2);
    // the dead session's ephemeral goes at load, at the last zxid
    assert_eq!(p.stat.pzxid, 21);
    assert!(out_node(&out, "/p/dead").is_none());
    assert!(out.warnings.iter().any(|w| w.contains("not alive")));
    assert_eq!(
        out_node(&out, "/p/mine")
            .expect("mine")
            .stat
            .ephemeral_owner,
        session
    );
    let x = out_node(&out, "/p/x").expect("x");
    assert_eq!((x.acl.clone(), x.stat.aversion), (vec![], 4));
    let root = out_node(&out, "/").expect("root");
    assert_eq!(root.data.as_deref(), Some(&b"root"[..]));
    assert_eq!(root.stat.version, 2);
    assert!(out_node(&out, "/m1").is_some());
    assert!(out_node(&out, "/m2").is_none());
    assert!(out_node(&out, "/never").is_none());
    assert_eq!(out.last_zxid, 21);
    assert_eq!(
        out.sessions,
        vec![ZkSession {
            id: session,
            timeout_ms: 4000
        }]
    );

    // a bad path in a create cannot be replayed: ZooKeeper would throw
    let snap = parse_snapshot(&base).expect("valid");
    let mut r = ZkReplay::new(&snap, 10).expect("tree");
    let bad = txn(
        11,
        1,
        opcode::CREATE,
        TxnBody::Create(create("p", 1, false)),
    );
    assert_eq!(r.apply(&bad), Err(ReplayError::BadPath("p".into())));
}

#[test]
fn close_session_and_orphans() {
    let s = 0x0100_0000_0000_0009;
    let base = snapshot_bytes(
        &[(s, 4000)],
        &[],
        &[
            ("", -1, 0, 2),
            ("/e1", -1, s, 0),
            ("/e2", -1, s, 0),
            ("/d", -1, 0, 1),
            ("/d/c", -1, 0, 0),
        ],
    );
    let out = replay_of(
        &base,
        &[
            // names only /e1; /e2 goes too, as the session's other ephemeral
            txn(
                11,
                s,
                opcode::CLOSE_SESSION,
                TxnBody::CloseSession {
                    paths: Some(vec!["/e1".into()]),
                },
            ),
            // DataTree deletes a node with children, leaving them unreachable
            txn(12, 1, opcode::DELETE, TxnBody::Delete { path: "/d".into() }),
        ],
    );
    let paths: Vec<&str> = out.nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, vec!["/"]);
    assert!(out.sessions.is_empty());
    assert!(out.warnings.iter().any(|w| w.contains("without a parent")));
}

/// One log record around `payload`.
fn record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.write_i64(i64::from(adler32(payload)));
    w.write_i32(payload.len() as i32);
    out.extend_from_slice(payload);
    out.push(b'B');
    out
}

fn txn_header(w: &mut Writer<'_>, zxid: i64, txn_type: i32) {
    w.write_i64(5); // client id
    w.write_i32(1); // cxid
    w.write_i64(zxid);
    w.write_i64(1234); // time
    w.write_i32(txn_type);
}

fn log_of(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"ZKLG\0\0\0\x02\0\0\0\0\0\0\0\x07".to_vec();
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

#[test]
fn old_record_shapes_decode_as_zookeeper_decodes_them() {
    // CreateTxnV0: no parentCVersion
    let mut v0 = Vec::new();
    let mut w = Writer::new(&mut v0);
    txn_header(&mut w, 1, opcode::CREATE);
    w.write_str("/old");
    w.write_buffer(None);
    w.write_i32(-1); // null ACL
    w.write_bool(true);
    // closeSession without a body (before 3.6)
    let mut close = Vec::new();
    txn_header(&mut Writer::new(&mut close), 2, opcode::CLOSE_SESSION);
    let log = parse_txn_log_full(&log_of(&[record(&v0), record(&close)])).expect("parses");
    assert_eq!(log.dbid, Some(7));
    assert_eq!(log.end, LogEnd::Eof);
    match &log.txns[0].body {
        TxnBody::Create(c) => {
            assert_eq!((c.path.as_str(), c.parent_cversion), ("/old", -1));
            assert_eq!(
                (c.acl.clone(), c.ephemeral, c.data.clone()),
                (None, true, None)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.txns[1].body, TxnBody::CloseSession { paths: None });
    assert_eq!(log.txns[1].offset, 16 + record(&v0).len() as u64);

    // a type ZooKeeper cannot deserialize at the top level is an error at its record
    for t in [opcode::CHECK, 99] {
        let mut p = Vec::new();
        let mut w = Writer::new(&mut p);
        txn_header(&mut w, 3, t);
        w.write_str("/x");
        w.write_i32(0);
        let bytes = log_of(&[record(&v0), record(&p)]);
        let err = parse_txn_log(&bytes).expect_err("unknown type");
        assert_eq!(err.offset, 16 + record(&v0).len() as u64);
        assert_eq!(err.reason, FormatReason::UnknownTxnType(t));
    }
}
