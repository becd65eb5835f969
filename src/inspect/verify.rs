//! `ringkeeper verify`: a read-only health check of a data dir, one line per check
//! (`ok`, `FAIL`, `note`, `skip`) and a verdict:
//!
//! 1. every snapshot: checksums, structure, and the index in its name;
//! 2. every segment: record checksums (a torn tail in the last segment holding data is a note:
//!    a starting member truncates it; damage anywhere else fails, with file and offset);
//! 3. the chain: kept entries contiguous, terms never decreasing, the log reaching back to the
//!    snapshot before the newest (the server's fallback; older snapshots are kept without the
//!    log since them) unless it starts at entry 1, and not ending before the newest snapshot;
//!    the hard state consistent with both;
//! 4. a replay of the kept log from the empty state (a log that starts at 1) or the oldest
//!    usable snapshot: every entry decodes, zxids strictly increase, and each later snapshot
//!    equals the replayed state at its index (tree, sessions, last zxid, term).

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::layout::{self, file_name, SnapshotFile};
use super::replay::{self, decode_batch, Prefer, Replayer, Step};
use super::survey::{Status, Survey, Visit};
use super::{emit, InspectError};
use crate::log::snapshots;
use crate::machine::{MachineConfig, View};
use crate::proto::types::{opcode, CreateMode, Zxid};
use crate::txn::{Batch, Op, WriteOp};

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub json: bool,
    pub ttl_enabled: bool,
}

/// The outcome of a check run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub passed: usize,
    pub failures: usize,
}

impl Verdict {
    pub fn healthy(&self) -> bool {
        self.failures == 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Fail,
    Note,
    Skip,
}

struct Report<'o> {
    out: &'o mut dyn Write,
    json: bool,
    verdict: Verdict,
}

impl Report<'_> {
    fn line(
        &mut self,
        level: Level,
        check: &str,
        file: Option<&Path>,
        offset: Option<u64>,
        message: &str,
    ) -> Result<(), InspectError> {
        match level {
            Level::Ok => self.verdict.passed += 1,
            Level::Fail => self.verdict.failures += 1,
            Level::Note | Level::Skip => {}
        }
        let status = match level {
            Level::Ok => "ok",
            Level::Fail => "FAIL",
            Level::Note => "note",
            Level::Skip => "skip",
        };
        emit(
            self.out,
            self.json,
            || {
                let mut s = format!("{status} {check}");
                if let Some(f) = file {
                    s.push(' ');
                    s.push_str(&file_name(f));
                }
                if let Some(o) = offset {
                    s.push_str(&format!(" at offset {o}"));
                }
                s.push_str(": ");
                s.push_str(message);
                s
            },
            || {
                json!({"status": status.to_ascii_lowercase(), "check": check,
                       "file": file.map(|f| f.display().to_string()), "offset": offset,
                       "message": message})
            },
        )
    }

    fn ok(&mut self, check: &str, file: Option<&Path>, msg: &str) -> Result<(), InspectError> {
        self.line(Level::Ok, check, file, None, msg)
    }
    fn fail(&mut self, check: &str, file: Option<&Path>, msg: &str) -> Result<(), InspectError> {
        self.line(Level::Fail, check, file, None, msg)
    }
    fn note(&mut self, check: &str, file: Option<&Path>, msg: &str) -> Result<(), InspectError> {
        self.line(Level::Note, check, file, None, msg)
    }
    fn skip(&mut self, check: &str, file: Option<&Path>, msg: &str) -> Result<(), InspectError> {
        self.line(Level::Skip, check, file, None, msg)
    }
}

/// Checks the data dir `dir` (or its log dir). `Err` only when it cannot be read at all.
pub fn verify(dir: &Path, opts: &Options, out: &mut dyn Write) -> Result<Verdict, InspectError> {
    let layout = layout::resolve(dir)?;
    let snaps = layout::snapshots(&layout.snap)?;
    let survey = Survey::read(&layout.log)?;
    let config = MachineConfig {
        ttl_enabled: opts.ttl_enabled,
        ..Default::default()
    };
    let mut r = Report {
        out,
        json: opts.json,
        verdict: Verdict::default(),
    };
    check_snapshots(&mut r, &snaps, &config)?;
    check_segments(&mut r, &survey)?;
    check_chain(&mut r, &survey, &snaps)?;
    check_replay(&mut r, &survey, &snaps, &config, opts.ttl_enabled)?;
    let v = r.verdict;
    emit(
        r.out,
        r.json,
        || {
            if v.healthy() {
                format!(
                    "healthy: {} passed",
                    plural(v.passed as u64, "check", "checks")
                )
            } else {
                format!(
                    "NOT HEALTHY: {} failed",
                    plural(v.failures as u64, "check", "checks")
                )
            }
        },
        || {
            json!({"verdict": if v.healthy() { "healthy" } else { "unhealthy" },
                   "passed": v.passed, "failures": v.failures})
        },
    )?;
    Ok(v)
}

fn check_snapshots(
    r: &mut Report<'_>,
    snaps: &[SnapshotFile],
    config: &MachineConfig,
) -> Result<(), InspectError> {
    if snaps.is_empty() {
        return r.note("snapshots", None, "none");
    }
    for s in snaps {
        let p = Some(s.path.as_path());
        match snapshots::load(&s.path, config.clone()) {
            Ok((meta, _)) if meta.index != s.index => r.fail(
                "snapshot",
                p,
                &format!("holds index {}, not the one in its name", meta.index),
            )?,
            Ok((meta, m)) => {
                let v = m.view();
                r.ok(
                    "snapshot",
                    p,
                    &format!(
                        "index={} term={} last_zxid={:#x} nodes={} sessions={}",
                        meta.index,
                        meta.term,
                        meta.last_zxid,
                        v.node_count(),
                        v.session_count()
                    ),
                )?
            }
            Err(e) => r.fail("snapshot", p, &source_message(&e))?,
        }
    }
    Ok(())
}

/// The error without the path (the line names the file already).
fn source_message(e: &snapshots::SnapshotFileError) -> String {
    match e {
        snapshots::SnapshotFileError::Bad { source, .. } => source.to_string(),
        snapshots::SnapshotFileError::Io { op, source, .. } => format!("{op}: {source}"),
    }
}

fn check_segments(r: &mut Report<'_>, survey: &Survey) -> Result<(), InspectError> {
    if survey.segments.is_empty() {
        return r.note("log", None, "no segments");
    }
    for (i, s) in survey.segments.iter().enumerate() {
        let p = Some(s.file.path.as_path());
        let mut damaged = false;
        for f in survey.findings.iter().filter(|f| f.segment == i) {
            let level = if f.damage { Level::Fail } else { Level::Note };
            damaged |= f.damage;
            r.line(level, "segment", p, f.offset, &f.reason)?;
        }
        if damaged {
            continue;
        }
        let msg = match (s.entries.first(), s.entries.last()) {
            (Some(a), Some(b)) => format!(
                "{} (entries {}..{}, {})",
                plural(s.records() as u64, "record", "records"),
                a.index,
                b.index,
                plural(s.hard_states as u64, "hard state", "hard states")
            ),
            _ if s.hard_states > 0 => format!(
                "{}, no entries",
                plural(s.hard_states as u64, "hard state", "hard states")
            ),
            _ => "preallocated, empty".to_string(),
        };
        r.ok("segment", p, &msg)?;
    }
    Ok(())
}

fn check_chain(
    r: &mut Report<'_>,
    survey: &Survey,
    snaps: &[SnapshotFile],
) -> Result<(), InspectError> {
    if survey.trusted < survey.segments.len() {
        let at = survey.path(survey.trusted.saturating_sub(1));
        r.note(
            "chain",
            None,
            &format!(
                "checked up to the damage in {} only (no member starts past it)",
                file_name(&at)
            ),
        )?;
    }
    let mut chain_ok = true;
    for g in &survey.gaps {
        let p = survey.path(g.segment);
        if snaps.iter().any(|s| s.index.saturating_add(1) == g.next) {
            r.note(
                "chain",
                Some(&p),
                &format!(
                    "entry {} follows {} (offset {}): the log restarts after snapshot {}",
                    g.next,
                    g.after,
                    g.offset,
                    g.next - 1
                ),
            )?;
        } else {
            chain_ok = false;
            r.line(
                Level::Fail,
                "chain",
                Some(&p),
                Some(g.offset),
                &format!(
                    "entry {} follows entry {}: entries are missing",
                    g.next, g.after
                ),
            )?;
        }
    }
    for o in &survey.overwrites {
        r.note(
            "chain",
            Some(&survey.path(o.segment)),
            &format!(
                "entries from {} on (term {}) rewritten in term {}: {} entries superseded",
                o.index, o.old_term, o.new_term, o.dropped
            ),
        )?;
    }
    if let Some(w) = survey.kept.windows(2).find(|w| w[1].term < w[0].term) {
        chain_ok = false;
        r.line(
            Level::Fail,
            "chain",
            Some(&survey.path(w[1].segment)),
            Some(w[1].offset),
            &format!(
                "entry {} has term {}, below term {} of entry {}",
                w[1].index, w[1].term, w[0].term, w[0].index
            ),
        )?;
    }
    let (first, last) = match (survey.kept.first(), survey.kept.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            r.note("chain", None, "the log holds no entries")?;
            return check_hard_state(r, survey, snaps);
        }
    };
    if chain_ok {
        r.ok(
            "chain",
            None,
            &format!(
                "entries {}..{} contiguous, terms {}..{} never decreasing",
                first.index, last.index, first.term, last.term
            ),
        )?;
    }

    // The server keeps the log back to the snapshot before the newest, so that a bad newest
    // snapshot can fall back to it; older snapshots stay for the operator without the log
    // since them (`Sequencer::snapshot_done`). The log must also not end before the newest.
    let fallback = snaps
        .len()
        .checked_sub(2)
        .map_or(snaps.last(), |i| snaps.get(i));
    match fallback {
        _ if first.index == 1 => r.ok("reach", None, "the log starts at entry 1")?,
        None => r.fail(
            "reach",
            None,
            &format!(
                "the log starts at entry {} and no snapshot covers the entries before it",
                first.index
            ),
        )?,
        Some(o) if first.index <= o.index.saturating_add(1) => r.ok(
            "reach",
            Some(&o.path),
            &format!(
                "the log (from entry {}) reaches back to this snapshot{}",
                first.index,
                if snaps.len() > 1 {
                    ", the one a bad newest snapshot falls back to"
                } else {
                    ""
                }
            ),
        )?,
        Some(o) => r.fail(
            "reach",
            Some(&o.path),
            &format!(
                "the log starts at entry {}, after this snapshot's index {} + 1{}",
                first.index,
                o.index,
                if snaps.len() > 1 {
                    ": a bad newest snapshot has nothing to fall back to"
                } else {
                    ""
                }
            ),
        )?,
    }
    if first.index > 1 {
        for s in snaps
            .iter()
            .filter(|s| s.index.saturating_add(1) < first.index)
            .filter(|s| Some(*s) != fallback)
        {
            r.note(
                "reach",
                Some(&s.path),
                &format!(
                    "older than the log (which starts at entry {}): kept for the operator",
                    first.index
                ),
            )?;
        }
    }
    if let Some(n) = snaps.last().filter(|n| n.index > last.index) {
        r.fail(
            "reach",
            Some(&n.path),
            &format!(
                "the snapshot is at index {}, past the log's last entry {}",
                n.index, last.index
            ),
        )?;
    }
    check_hard_state(r, survey, snaps)
}

fn check_hard_state(
    r: &mut Report<'_>,
    survey: &Survey,
    snaps: &[SnapshotFile],
) -> Result<(), InspectError> {
    let Some(hs) = survey.hard_state else {
        if !survey.kept.is_empty() {
            r.note("hardstate", None, "the log holds no hard state record")?;
        }
        return Ok(());
    };
    let last = survey.kept.last().map_or(0, |k| k.index);
    let last_term = survey.kept.last().map_or(0, |k| k.term);
    let top = last.max(snaps.last().map_or(0, |s| s.index));
    let what = format!("term={} vote={} commit={}", hs.term, hs.vote, hs.commit);
    if hs.commit > top {
        r.fail(
            "hardstate",
            None,
            &format!("{what}: commit is past the last entry {top}"),
        )
    } else if hs.term < last_term {
        r.fail(
            "hardstate",
            None,
            &format!("{what}: term is below the last entry's term {last_term}"),
        )
    } else {
        r.ok("hardstate", None, &what)
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Whether a batch creates a TTL node (whose result depends on `ttl_enabled`).
fn has_ttl_create(batch: &Batch) -> bool {
    let ttl = |w: &WriteOp| {
        matches!(w, WriteOp::Create { opcode: op, req }
            if *op == opcode::CREATE_TTL
                || CreateMode::from_flags(req.flags).is_some_and(CreateMode::is_ttl))
    };
    batch.commands.iter().any(|c| match &c.op {
        Op::Write(w) => ttl(w),
        Op::Multi(ops) => ops.iter().any(ttl),
        _ => false,
    })
}

fn check_replay(
    r: &mut Report<'_>,
    survey: &Survey,
    snaps: &[SnapshotFile],
    config: &MachineConfig,
    ttl_enabled: bool,
) -> Result<(), InspectError> {
    let range = survey.first_index().zip(survey.last_index());
    let (base, _failed) = replay::baseline(range, snaps, Prefer::Oldest, config);
    // Snapshots that failed to load were reported above.
    let Some(base) = base else {
        if range.is_some() {
            r.skip(
                "replay",
                None,
                "no usable starting point: the log does not start at 1 and no snapshot it \
                 reaches back to loads",
            )?;
        }
        for s in snaps {
            r.skip("match", Some(&s.path), "no replay reaches it")?;
        }
        return Ok(());
    };
    let (base_index, base_source) = (base.index, base.source.clone());
    let mut to_compare: Vec<&SnapshotFile> = Vec::new();
    for s in snaps {
        if base_source.as_deref() == Some(s.path.as_path()) {
            r.skip("match", Some(&s.path), "the replay starts from it")?;
        } else if s.index < base_index {
            r.skip("match", Some(&s.path), "older than where the replay starts")?;
        } else {
            to_compare.push(s);
        }
    }
    let mut next_compare = 0usize;
    let mut prev_zxid: Zxid = base.machine.last_zxid();
    let mut first_zxid: Option<Zxid> = None;
    let (mut commands, mut entries, mut zxid_fail, mut saw_ttl) = (0u64, 0u64, false, false);
    let mut stopped = false;
    let mut replayer = Replayer::new(Some(base));
    survey.visit(
        |i, s| i < survey.trusted && s.entries.last().is_some_and(|e| e.index > base_index),
        |v| {
            let Visit::Record {
                segment,
                offset,
                record: crate::log::record::OwnedRecord::Entry(e),
                status: Status::Kept,
            } = v
            else {
                return Ok(true);
            };
            if e.index <= base_index {
                return Ok(true);
            }
            let p = survey.path(segment);
            let batch = match decode_batch(&e.data, e.conf_change) {
                Ok(b) => b,
                Err(why) => {
                    r.line(
                        Level::Fail,
                        "replay",
                        Some(&p),
                        Some(offset),
                        &format!("entry {} does not decode: {why}", e.index),
                    )?;
                    stopped = true;
                    return Ok(false);
                }
            };
            saw_ttl |= batch.as_ref().is_some_and(has_ttl_create);
            let applied = match replayer.step(e.index, e.term, batch.as_ref()) {
                Step::Applied(a) => a,
                Step::Covered => return Ok(true),
                Step::Unknown => {
                    r.line(
                        Level::Fail,
                        "replay",
                        Some(&p),
                        Some(offset),
                        &format!("entry {} does not follow the previous one", e.index),
                    )?;
                    stopped = true;
                    return Ok(false);
                }
            };
            entries += 1;
            for a in applied.iter().filter(|a| !a.duplicate) {
                commands += 1;
                if a.zxid <= prev_zxid && !zxid_fail {
                    zxid_fail = true;
                    r.line(
                        Level::Fail,
                        "replay",
                        Some(&p),
                        Some(offset),
                        &format!(
                            "entry {}: zxid {:#x} does not follow {:#x}",
                            e.index, a.zxid, prev_zxid
                        ),
                    )?;
                }
                prev_zxid = prev_zxid.max(a.zxid);
                first_zxid.get_or_insert(a.zxid);
            }
            while let Some(s) = to_compare.get(next_compare).filter(|s| s.index <= e.index) {
                next_compare += 1;
                if s.index < e.index {
                    r.skip("match", Some(&s.path), "its index is not in the log")?;
                    continue;
                }
                let Some(m) = replayer.machine() else { break };
                compare(r, s, &m.view(), e.term, saw_ttl, ttl_enabled, config)?;
            }
            Ok(true)
        },
    )?;
    for s in &to_compare[next_compare..] {
        r.skip(
            "match",
            Some(&s.path),
            "the replay does not reach its index",
        )?;
    }
    let from = match &base_source {
        Some(p) => format!("snapshot {}", file_name(p)),
        None => "the empty state".to_string(),
    };
    if !stopped && !zxid_fail {
        let through = replayer.applied_index();
        r.ok(
            "replay",
            None,
            &format!(
                "{} to index {through} from {from}: {}, zxids {} strictly increasing",
                plural(entries, "entry", "entries"),
                plural(commands, "command", "commands"),
                first_zxid.map_or("-".to_string(), |f| format!("{f:#x}..{prev_zxid:#x}"))
            ),
        )?;
    }
    Ok(())
}

/// Compares snapshot `s` with the replayed state at its index (`term`: the entry's).
fn compare(
    r: &mut Report<'_>,
    s: &SnapshotFile,
    replayed: &View,
    term: u64,
    saw_ttl: bool,
    ttl_enabled: bool,
    config: &MachineConfig,
) -> Result<(), InspectError> {
    let p = Some(s.path.as_path());
    // Decoded again rather than kept from the first check: one snapshot's tree in memory at a
    // time besides the replay's, however many snapshots the dir keeps.
    let (meta, machine) = match snapshots::load(&s.path, config.clone()) {
        Ok(x) => x,
        Err(_) => return r.skip("match", p, "it does not load (see above)"),
    };
    let snap = machine.view();
    let mut diffs = Vec::new();
    if meta.term != term {
        diffs.push(format!(
            "term {} where entry {} has {term}",
            meta.term, s.index
        ));
    }
    if meta.last_zxid != replayed.last_zxid() || snap.last_zxid() != replayed.last_zxid() {
        diffs.push(format!(
            "last zxid {:#x} where the replay has {:#x}",
            meta.last_zxid,
            replayed.last_zxid()
        ));
    }
    if let Some(d) = tree_diff(&snap, replayed) {
        diffs.push(d);
    }
    if let Some(d) = session_diff(&snap, replayed) {
        diffs.push(d);
    }
    if diffs.is_empty() {
        return r.ok(
            "match",
            p,
            &format!(
                "equals the replayed state at index {} ({}, {})",
                s.index,
                plural(snap.node_count() as u64, "znode", "znodes"),
                plural(snap.session_count() as u64, "session", "sessions")
            ),
        );
    }
    let mut msg = format!(
        "differs from the replayed state at index {}: {}",
        s.index,
        diffs.join("; ")
    );
    if saw_ttl {
        msg.push_str(&format!(
            " (the log has TTL creates, whose results depend on the server's --ttl-enabled; \
             this check ran with it {})",
            if ttl_enabled { "on" } else { "off" }
        ));
    }
    r.fail("match", p, &msg)
}

/// A description of how the trees differ: how many paths, and the first in path order.
fn tree_diff(snap: &View, replayed: &View) -> Option<String> {
    if snap.tree() == replayed.tree() {
        return None;
    }
    let mut count = 0usize;
    let mut first: Option<(String, &'static str)> = None;
    let mut note = |path: &str, what: &'static str| {
        count += 1;
        if first.as_ref().is_none_or(|(p, _)| path < p.as_str()) {
            first = Some((path.to_string(), what));
        }
    };
    for (path, node) in snap.tree().iter() {
        match replayed.node(path) {
            None => note(path, "only in the snapshot"),
            Some(n) if n != node => note(path, "differs"),
            Some(_) => {}
        }
    }
    for (path, _) in replayed.tree().iter() {
        if snap.node(path).is_none() {
            note(path, "only in the replay");
        }
    }
    Some(match first {
        Some((path, what)) => format!("{count} znodes differ, first {path} ({what})"),
        None => "the trees' bookkeeping differs".to_string(),
    })
}

fn session_diff(snap: &View, replayed: &View) -> Option<String> {
    if snap.session_table() == replayed.session_table() {
        return None;
    }
    let mut count = 0usize;
    let mut first: Option<(i64, &'static str)> = None;
    let mut note = |id: i64, what: &'static str| {
        count += 1;
        if first.is_none_or(|(f, _)| id < f) {
            first = Some((id, what));
        }
    };
    for (id, s) in snap.sessions() {
        match replayed.session(id) {
            None => note(id, "only in the snapshot"),
            Some(x) if x != s => note(id, "differs"),
            Some(_) => {}
        }
    }
    for (id, _) in replayed.sessions() {
        if snap.session(id).is_none() {
            note(id, "only in the replay");
        }
    }
    Some(match first {
        Some((id, what)) => format!("{count} sessions differ, first {id:#x} ({what})"),
        None => "the session id allocator differs".to_string(),
    })
}
