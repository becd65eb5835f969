//! `ringkeeper log dump`: every record of the log in file order, one line per command:
//!
//! ```text
//! # 00000000000000000001.seg
//! hardstate term=1 vote=1 commit=0
//! 1 1 - - - noop
//! 2 1 0x100000001 0x0 0 createSession timeout=30000 ok session=0x1000001a2b3c0000
//! 3 1 0x100000002 0x1000001a2b3c0000 1 create /a len=3 ok
//! 3 1 0x100000003 0x1000001a2b3c0000 2 setData /a len=1 err=BadVersion
//! ```
//!
//! Columns: index, term, zxid, session, xid, the op and its arguments, the result. Zxids and
//! results come from a replay (see the module docs of `inspect`); entries the starting
//! snapshot already covers, and entries no replay reaches, show `-` and no result. Records
//! that are not part of the log a member would start from are marked `(superseded)` (rewritten
//! by raft, or dropped before a gap) or `(untrusted)` (after damage). Comment lines (`#`) name
//! each segment and report torn tails and damage.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::describe::{hex, op_json, op_text, result_json, result_text};
use super::layout::{self, file_name};
use super::replay::{self, decode_batch, Prefer, Replayer, Step};
use super::survey::{Status, Survey, Visit};
use super::{emit, InspectError};
use crate::log::record::{OwnedRecord, RecoveredEntry};
use crate::machine::MachineConfig;
use crate::txn::Applied;

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub json: bool,
    pub ttl_enabled: bool,
}

pub fn dump(dir: &Path, opts: &Options, out: &mut dyn Write) -> Result<(), InspectError> {
    let layout = layout::resolve(dir)?;
    let survey = Survey::read(&layout.log)?;
    let mut p = Printer {
        out,
        json: opts.json,
    };
    let snaps = match layout::snapshots(&layout.snap) {
        Ok(s) => s,
        Err(e) => {
            p.note(&format!(
                "snapshots not readable ({e}): replaying without them"
            ))?;
            Vec::new()
        }
    };
    let config = MachineConfig {
        ttl_enabled: opts.ttl_enabled,
        ..Default::default()
    };
    let range = survey.first_index().zip(survey.last_index());
    let (base, failed) = replay::baseline(range, &snaps, Prefer::Newest, &config);
    for (path, why) in failed {
        p.note(&format!(
            "snapshot {} does not load: {why}",
            file_name(&path)
        ))?;
    }
    match (&base, range) {
        (_, None) => p.note("the log holds no entries")?,
        (Some(b), _) => match &b.source {
            Some(path) => p.note(&format!(
                "zxids and results replayed from snapshot {} (index {}): entries up to it show none",
                file_name(path),
                b.index
            ))?,
            None => p.note("zxids and results replayed from the empty state")?,
        },
        (None, Some((first, _))) => p.note(&format!(
            "no snapshot anchors entry {first} (the first in the log): zxids and results unknown"
        ))?,
    }
    let mut replayer = Replayer::new(base);
    let mut untrusted_noted = false;
    survey.visit(
        |_, _| true,
        |v| {
            match v {
                Visit::Segment(i, s) => {
                    if i >= survey.trusted && !untrusted_noted {
                        untrusted_noted = true;
                        p.note("from here on the log is past damage: no member starts from it")?;
                    }
                    p.segment(&s.file.name(), s.file.path.display().to_string())?;
                }
                Visit::ReadFailed(i, why) => {
                    p.note(&format!("{}: {why}", survey.segments[i].file.name()))?;
                }
                Visit::End(i, s) => {
                    for f in survey.findings.iter().filter(|f| f.segment == i) {
                        let at = f
                            .offset
                            .map_or(String::new(), |o| format!(" at offset {o}"));
                        let what = if f.damage { "DAMAGE" } else { "note" };
                        let text = format!("{what}{at}: {}", f.reason);
                        p.finding(&text, &s.file.name(), f.offset, f.damage)?;
                    }
                }
                Visit::Record {
                    segment,
                    offset,
                    record,
                    status,
                } => match record {
                    OwnedRecord::HardState(hs) => {
                        emit(
                            p.out,
                            p.json,
                            || {
                                format!(
                                    "hardstate term={} vote={} commit={}",
                                    hs.term, hs.vote, hs.commit
                                )
                            },
                            || {
                                json!({"type": "hardstate", "term": hs.term, "vote": hs.vote,
                                       "commit": hs.commit, "offset": offset})
                            },
                        )?;
                    }
                    OwnedRecord::Entry(e) => {
                        let file = survey.segments[segment].file.name();
                        p.entry(&e, status, &mut replayer, &file, offset)?;
                    }
                },
            }
            Ok(true)
        },
    )
}

struct Printer<'o> {
    out: &'o mut dyn Write,
    json: bool,
}

impl Printer<'_> {
    fn note(&mut self, text: &str) -> Result<(), InspectError> {
        emit(
            self.out,
            self.json,
            || format!("# {text}"),
            || json!({"type": "note", "text": text}),
        )
    }

    fn segment(&mut self, name: &str, path: String) -> Result<(), InspectError> {
        emit(
            self.out,
            self.json,
            || format!("# {name}"),
            || json!({"type": "segment", "file": name, "path": path}),
        )
    }

    fn finding(
        &mut self,
        text: &str,
        file: &str,
        offset: Option<u64>,
        damage: bool,
    ) -> Result<(), InspectError> {
        emit(
            self.out,
            self.json,
            || format!("# {text}"),
            || {
                json!({"type": if damage { "damage" } else { "torn" }, "file": file,
                       "offset": offset, "text": text})
            },
        )
    }

    fn entry(
        &mut self,
        e: &RecoveredEntry,
        status: Status,
        replayer: &mut Replayer,
        file: &str,
        offset: u64,
    ) -> Result<(), InspectError> {
        let batch = decode_batch(&e.data, e.conf_change);
        let applied: Option<Vec<Applied>> = match (status, &batch) {
            (Status::Kept, Ok(b)) => match replayer.step(e.index, e.term, b.as_ref()) {
                Step::Applied(a) => Some(a),
                Step::Covered | Step::Unknown => None,
            },
            (Status::Kept, Err(_)) => {
                // What this entry would have done is unknown, and so is every later state.
                replayer.lose_state();
                None
            }
            _ => None,
        };
        let mark = match status {
            Status::Kept => "",
            Status::Superseded => " (superseded)",
            Status::Untrusted => " (untrusted)",
        };
        let status_name = match status {
            Status::Kept => "kept",
            Status::Superseded => "superseded",
            Status::Untrusted => "untrusted",
        };
        let base = |m: &mut Map<String, Value>| {
            m.insert("index".into(), e.index.into());
            m.insert("term".into(), e.term.into());
            m.insert("status".into(), status_name.into());
            m.insert("file".into(), file.into());
            m.insert("offset".into(), offset.into());
        };
        let batch = match batch {
            Ok(Some(b)) => b,
            Ok(None) => {
                return emit(
                    self.out,
                    self.json,
                    || format!("{} {} - - - noop{mark}", e.index, e.term),
                    || {
                        let mut m = Map::new();
                        m.insert("type".into(), "noop".into());
                        base(&mut m);
                        Value::Object(m)
                    },
                );
            }
            Err(why) => {
                return emit(
                    self.out,
                    self.json,
                    || {
                        format!(
                            "{} {} - - - undecodable len={}{mark}: {why}",
                            e.index,
                            e.term,
                            e.data.len()
                        )
                    },
                    || {
                        let mut m = Map::new();
                        m.insert("type".into(), "undecodable".into());
                        base(&mut m);
                        m.insert("data_len".into(), e.data.len().into());
                        m.insert("error".into(), why.clone().into());
                        Value::Object(m)
                    },
                );
            }
        };
        for (i, cmd) in batch.commands.iter().enumerate() {
            let a = applied.as_ref().and_then(|v| v.get(i));
            let zxid = a.map_or("-".to_string(), |a| hex(a.zxid));
            let result = a.map(|a| result_text(&a.result, &cmd.op));
            let retry = a.is_some_and(|a| a.duplicate);
            emit(
                self.out,
                self.json,
                || {
                    let mut s = format!(
                        "{} {} {zxid} {} {} {}",
                        e.index,
                        e.term,
                        hex(cmd.session),
                        cmd.xid,
                        op_text(&cmd.op)
                    );
                    if let Some(r) = &result {
                        s.push(' ');
                        s.push_str(r);
                    }
                    if retry {
                        s.push_str(" retry");
                    }
                    s.push_str(mark);
                    s
                },
                || {
                    let mut m = Map::new();
                    m.insert("type".into(), "command".into());
                    base(&mut m);
                    m.insert("time_ms".into(), batch.time_ms.into());
                    m.insert("zxid".into(), a.map_or(Value::Null, |a| hex(a.zxid).into()));
                    m.insert("session".into(), hex(cmd.session).into());
                    m.insert("xid".into(), cmd.xid.into());
                    m.extend(op_json(&cmd.op));
                    m.insert(
                        "result".into(),
                        result.clone().map_or(Value::Null, Value::from),
                    );
                    if let Some(a) = a {
                        m.insert("retry".into(), a.duplicate.into());
                        result_json(&a.result, &mut m);
                    }
                    Value::Object(m)
                },
            )?;
        }
        if batch.commands.is_empty() {
            emit(
                self.out,
                self.json,
                || format!("{} {} - - - batch[0]{mark}", e.index, e.term),
                || {
                    let mut m = Map::new();
                    m.insert("type".into(), "empty_batch".into());
                    base(&mut m);
                    Value::Object(m)
                },
            )?;
        }
        Ok(())
    }
}
